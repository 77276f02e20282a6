// The owner of a connection: the socket's inode from NETLINK_SOCK_DIAG for a real loopback
// connection of this process, the /proc scan on a hand-made proc tree, and the unit of a
// cgroup path.
#include "sock_owner.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace imds {
namespace {

SocketName end_of(int fd, bool peer) {
  sockaddr_in a{};
  socklen_t n = sizeof a;
  if (peer) {
    ::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n);
  } else {
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  }
  SocketName s;
  std::memcpy(s.address.data(), &a.sin_addr, 4);
  s.port = ntohs(a.sin_port);
  return s;
}

TEST(TcpSocketInode, FindsThisProcessesOwnConnectionByItsEnds) {
  UniqueFd server(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(server.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(server.get(), 1), 0);
  socklen_t n = sizeof a;
  ::getsockname(server.get(), reinterpret_cast<sockaddr*>(&a), &n);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);

  const NetnsSocketFactory factory;
  const auto inode = tcp_socket_inode(factory, -1, end_of(client.get(), false), end_of(client.get(), true));
  ASSERT_TRUE(inode.has_value());
  struct stat st {};
  ASSERT_EQ(::fstat(client.get(), &st), 0);
  EXPECT_EQ(*inode, st.st_ino);

  // Its owner is this process.
  const auto owners = socket_owners({*inode});
  ASSERT_EQ(owners.size(), 1U);
  EXPECT_EQ(owners.begin()->second.pid, ::getpid());
  EXPECT_FALSE(owners.begin()->second.comm.empty());

  // A port nobody uses: nothing, never a guess.
  SocketName other = end_of(client.get(), false);
  other.port = static_cast<std::uint16_t>(other.port == 1 ? 2 : 1);
  EXPECT_FALSE(tcp_socket_inode(factory, -1, other, end_of(client.get(), true)).has_value());
}

TEST(SocketOwners, ReadsTheHoldersCommAndUnitAndSkipsWhatIsNotASocket) {
  const auto root = std::filesystem::temp_directory_path() /
                    ("imds-sock-owner-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "4321" / "fd");
  std::filesystem::create_directories(root / "77" / "fd");
  std::filesystem::create_directories(root / "self");
  std::filesystem::create_symlink("socket:[9001]", root / "4321" / "fd" / "5");
  std::filesystem::create_symlink("/dev/null", root / "4321" / "fd" / "0");
  std::filesystem::create_symlink("socket:[12x]", root / "77" / "fd" / "3");
  std::ofstream(root / "4321" / "comm") << "python3\n";
  std::ofstream(root / "4321" / "cgroup") << "0::/system.slice/app.service\n";
  const auto owners = socket_owners({9001, 9002}, root.string());
  ASSERT_EQ(owners.size(), 1U);
  const ProcessInfo& p = owners.at(9001);
  EXPECT_EQ(p.pid, 4321);
  EXPECT_EQ(p.comm, "python3");
  EXPECT_EQ(p.unit, "app.service");
  std::filesystem::remove_all(root);
}

TEST(SocketOwners, TheFirstPidIsAskedFirstAndTheRestOnlyForWhatItLacks) {
  const auto root = std::filesystem::temp_directory_path() /
                    ("imds-sock-owner-first-" + std::to_string(::getpid()));
  std::filesystem::remove_all(root);
  for (const char* pid : {"10", "20", "30"}) std::filesystem::create_directories(root / pid / "fd");
  // 9001 is shared by 10 and 30 (a forked child keeps its parent's socket); 9002 only by 20.
  std::filesystem::create_symlink("socket:[9001]", root / "10" / "fd" / "3");
  std::filesystem::create_symlink("socket:[9001]", root / "30" / "fd" / "4");
  std::filesystem::create_symlink("socket:[9002]", root / "20" / "fd" / "5");
  // The first pid holds all that is asked: it is the owner, whatever the directory order.
  auto owners = socket_owners({9001}, root.string(), 30);
  ASSERT_EQ(owners.size(), 1U);
  EXPECT_EQ(owners.at(9001).pid, 30);
  // What it lacks comes from the scan, and the first pid keeps what it holds.
  owners = socket_owners({9001, 9002}, root.string(), 30);
  ASSERT_EQ(owners.size(), 2U);
  EXPECT_EQ(owners.at(9001).pid, 30);
  EXPECT_EQ(owners.at(9002).pid, 20);
  // A first pid that is gone is no obstacle.
  owners = socket_owners({9002}, root.string(), 99);
  ASSERT_EQ(owners.size(), 1U);
  EXPECT_EQ(owners.at(9002).pid, 20);
  std::filesystem::remove_all(root);
}

TEST(UnitOfCgroup, TheUnitOrScopeAPathEndsIn) {
  EXPECT_EQ(unit_of_cgroup("0::/system.slice/cron.service\n"), "cron.service");
  EXPECT_EQ(unit_of_cgroup("0::/system.slice/docker-0123abcd.scope\n"), "docker-0123abcd.scope");
  EXPECT_EQ(unit_of_cgroup("0::/user.slice/user-1000.slice/session-3.scope/x\n"), "session-3.scope");
  EXPECT_EQ(unit_of_cgroup("12:pids:/a\n1:name=systemd:/system.slice/ssh.service\n"), "ssh.service");
  EXPECT_FALSE(unit_of_cgroup("0::/\n").has_value());
  EXPECT_FALSE(unit_of_cgroup("0::/kubepods/besteffort/pod1/abc\n").has_value());
  EXPECT_FALSE(unit_of_cgroup("garbage").has_value());
  EXPECT_FALSE(unit_of_cgroup("").has_value());
}

}  // namespace
}  // namespace imds
