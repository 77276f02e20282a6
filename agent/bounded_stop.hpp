// Stopping a helper thread within a bound: the agent's two threads (the probe worker and
// the journal sender) may be blocked in a call that never returns (a hanging IMDS, a
// journald that does not read), and shutdown must not wait for them.
#pragma once

#include <chrono>
#include <mutex>
#include <thread>

namespace imds::agent {

// `State` has `mutex`, `cv`, `stopping` and `exited` (set by the thread, under the mutex,
// as its last act). Asks the thread to stop, waits at most `bound` for it to exit, joins
// it if it did and returns true; otherwise detaches it and returns false: the thread must
// then touch only what it owns (its shared state), which its owner keeps alive.
template <class State>
bool stop_within(std::thread& thread, State& state, std::chrono::milliseconds bound) {
  if (!thread.joinable()) return true;
  bool exited = false;
  {
    std::unique_lock lock(state.mutex);
    state.stopping = true;
    state.cv.notify_all();
    exited = state.cv.wait_for(lock, bound, [&] { return state.exited; });
  }
  if (exited) {
    thread.join();
    return true;
  }
  thread.detach();
  return false;
}

}  // namespace imds::agent
