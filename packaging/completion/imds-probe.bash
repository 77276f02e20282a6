# bash completion for imds-probe(1). Uses bash-completion's helpers when loaded, plain
# compgen otherwise.

_imds_probe() {
  local cur prev words cword
  if declare -F _init_completion >/dev/null; then
    _init_completion -n = || return
  else
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    # Without bash-completion, "--json=s" arrives as "--json" "=" "s".
    if [[ $cur == = ]]; then
      cur="${prev}="
      prev=
    elif [[ $prev == = && $cword -ge 2 ]]; then
      cur="${COMP_WORDS[COMP_CWORD - 2]}=$cur"
      prev=
    fi
  fi

  local opts="--all-containers --netns --pid --container --netns-dir --exclude-netns
    --no-proc-scan --simulate-container --no-v1 --no-ipv6 --exact-hop-limit --no-packet-ttl
    --endpoint --endpoint-v6 --timeout --deadline --expect --json --no-color --agent --socket
    --version --help"

  case $prev in
    --netns | --exclude-netns | --socket)
      if declare -F _filedir >/dev/null; then _filedir; else COMPREPLY=($(compgen -f -- "$cur")); fi
      return
      ;;
    --netns-dir)
      if declare -F _filedir >/dev/null; then _filedir -d; else COMPREPLY=($(compgen -d -- "$cur")); fi
      return
      ;;
    --pid)
      COMPREPLY=($(compgen -W "$(cd /proc && echo [0-9]*)" -- "$cur"))
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
