# bash completion for imds-probe(1).

_imds_probe() {
  local cur prev words cword
  _init_completion -n = || return

  local opts="--all-containers --netns --pid --container --netns-dir --exclude-netns
    --no-proc-scan --simulate-container --no-v1 --no-ipv6 --exact-hop-limit --no-packet-ttl
    --endpoint --endpoint-v6 --timeout --deadline --expect --json --no-color --agent --socket
    --version --help"

  case $prev in
    --netns | --exclude-netns)
      _filedir
      return
      ;;
    --netns-dir)
      _filedir -d
      return
      ;;
    --socket)
      _filedir sock
      return
      ;;
    --pid)
      _pids
      return
      ;;
    --container | --endpoint | --endpoint-v6 | --timeout | --deadline)
      return
      ;;
    --expect)
      COMPREPLY=($(compgen -W "http-tokens=optional http-tokens=required hop-limit=
        hop-limit=>= imds-support=v2.0 endpoint=enabled endpoint=disabled ipv6=enabled
        ipv6=disabled tags=enabled tags=disabled" -- "$cur"))
      [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
      return
      ;;
  esac

  if [[ $cur == --json=* ]]; then
    COMPREPLY=($(compgen -W "short pretty off" -- "${cur#--json=}"))
    return
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "$opts --json=" -- "$cur"))
    [[ ${COMPREPLY-} == *= ]] && compopt -o nospace
    return
  fi
  if ((cword == 1)); then
    COMPREPLY=($(compgen -W "status" -- "$cur"))
  fi
} && complete -F _imds_probe imds-probe
