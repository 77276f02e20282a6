// The namespace watcher: inotify on the directories that hold named network namespaces, so that
// a container that starts or stops is probed within the debounce, not at the next interval.
#pragma once

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config.hpp"

namespace imds::agent {

class NetnsWatcher {
 public:
  // `changed` runs on the loop once a burst of changes in the watched directories has settled.
  NetnsWatcher(boost::asio::io_context& io, std::function<void()> changed);

  // (Re)arms the watches on `netns_dirs`; a directory that does not exist yet is watched
  // through its nearest existing parent, so that its creation is seen too.
  void watch(std::vector<std::string> netns_dirs, Millis debounce);
  void close();  // stopping: no callback after this

 private:
  void arm_watches();
  void read_inotify();

  boost::asio::io_context& io_;
  std::function<void()> changed_;
  std::vector<std::string> netns_dirs_;
  Millis debounce_{};
  boost::asio::steady_timer debounce_timer_;
  std::optional<boost::asio::posix::stream_descriptor> inotify_;
  std::vector<int> watch_descriptors_;
  std::set<int> ancestor_watches_;  // parents of netns dirs that do not exist yet
  std::array<char, 4096> inotify_buffer_{};
  bool closed_ = false;
};

}  // namespace imds::agent
