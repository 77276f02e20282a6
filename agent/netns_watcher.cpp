// The namespace watcher; see netns_watcher.hpp.
#include "netns_watcher.hpp"

#include <spdlog/spdlog.h>
#include <sys/inotify.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <utility>

namespace asio = boost::asio;

namespace imds::agent {
namespace {

constexpr std::uint32_t kDirEvents = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM |
                                     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR;
constexpr std::uint32_t kAncestorEvents = IN_CREATE | IN_MOVED_TO | IN_ONLYDIR;

}  // namespace

NetnsWatcher::NetnsWatcher(asio::io_context& io, std::function<void()> changed)
    : io_(io), changed_(std::move(changed)), debounce_timer_(io) {}

void NetnsWatcher::watch(std::vector<std::string> netns_dirs, Millis debounce) {
  netns_dirs_ = std::move(netns_dirs);
  debounce_ = debounce;
  arm_watches();
}

void NetnsWatcher::close() {
  closed_ = true;
  debounce_timer_.cancel();
  boost::system::error_code ignored;
  if (inotify_) inotify_->close(ignored);
}

void NetnsWatcher::arm_watches() {
  namespace fs = std::filesystem;
  if (!inotify_) {
    const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
      spdlog::warn("inotify_init1: {}: new namespaces are found at the next interval only",
                   std::strerror(errno));
      return;
    }
    inotify_.emplace(io_, fd);
    read_inotify();
  }
  for (int wd : watch_descriptors_) ::inotify_rm_watch(inotify_->native_handle(), wd);
  watch_descriptors_.clear();
  ancestor_watches_.clear();
  for (const auto& dir : netns_dirs_) {
    std::error_code ec;
    fs::path p(dir);
    std::uint32_t mask = kDirEvents;
    // Not there yet (no container started since boot): watch the nearest existing parent
    // so that the directory's creation is seen too.
    while (!fs::is_directory(p, ec) && p.has_parent_path() && p != p.parent_path()) {
      p = p.parent_path();
      mask = kAncestorEvents;
    }
    const int wd = ::inotify_add_watch(inotify_->native_handle(), p.c_str(), mask);
    if (wd < 0) {
      spdlog::warn("cannot watch {}: {}", p.string(), std::strerror(errno));
      continue;
    }
    watch_descriptors_.push_back(wd);
    if (mask == kAncestorEvents) {
      ancestor_watches_.insert(wd);
    } else {
      ancestor_watches_.erase(wd);  // the same directory may be both; the netns dir wins
      spdlog::debug("watching {} for network namespaces", p.string());
    }
  }
}

void NetnsWatcher::read_inotify() {
  if (!inotify_) return;  // arm_watches() opens it first
  inotify_->async_read_some(
      asio::buffer(inotify_buffer_), [this](boost::system::error_code ec, std::size_t n) {
        if (ec || closed_) return;
        bool rearm = false;
        bool changed = false;
        std::size_t off = 0;
        while (off + sizeof(inotify_event) <= n) {
          inotify_event ev{};
          std::memcpy(&ev, inotify_buffer_.data() + off, sizeof ev);
          off += sizeof(inotify_event) + ev.len;
          if ((ev.mask & IN_IGNORED) != 0) continue;  // the echo of our own rm_watch
          if (ancestor_watches_.contains(ev.wd)) {
            // Something appeared next to a netns dir that does not exist yet: maybe the
            // dir itself (or its parent). Re-arm; probe once the dir really is there.
            if ((ev.mask & IN_ISDIR) != 0) rearm = true;
            continue;
          }
          if ((ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW)) != 0) rearm = true;
          changed = true;
        }
        if (rearm) {
          const auto before = ancestor_watches_.size();
          arm_watches();
          // A netns dir came into existence: it may already hold namespaces.
          if (ancestor_watches_.size() < before) changed = true;
        }
        if (changed) {
          // `ip netns add` creates the file, then bind-mounts the namespace onto it; a
          // container runtime creates several in a burst: wait for things to settle.
          debounce_timer_.expires_after(debounce_);
          debounce_timer_.async_wait([this](boost::system::error_code e) {
            if (!e) changed_();
          });
        }
        read_inotify();
      });
}

}  // namespace imds::agent
