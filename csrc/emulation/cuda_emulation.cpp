// The CUDA emulation's scheduler (cuda_emulation.h): blocks one after another in a random order,
// a block's threads as fibers that run, in a random order, until each waits at a barrier or returns;
// a barrier opens when every thread it needs waits at it.
#include "cuda_emulation.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace pixelfolder::cuda_emulation {
namespace {

constexpr std::size_t kStackBytes = 64 * 1024;
constexpr std::size_t kMaxShuffleBytes = 16;
constexpr const char* kSeedVariable = "PIXELFOLDER_CUDA_EMULATION_SEED";

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error("CUDA emulation: " + message); }

// A fiber's stack, with an inaccessible page below it so that an overflow faults instead of
// overwriting memory.
class Stack {
 public:
  Stack() : page_(static_cast<std::size_t>(sysconf(_SC_PAGESIZE))) {
    base_ = mmap(nullptr, page_ + kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base_ == MAP_FAILED) fail("cannot allocate a fiber stack");
    mprotect(base_, page_, PROT_NONE);
  }
  ~Stack() { munmap(base_, page_ + kStackBytes); }
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  void* bottom() const { return static_cast<char*>(base_) + page_; }

 private:
  std::size_t page_;
  void* base_;
};

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kReturned };

struct Fiber {
  ucontext_t context;
  Stack stack;
  ThreadIndex index;
  int warp, lane;
  State state;
  unsigned char published[kMaxShuffleBytes];  // this lane's value at a warp exchange
};

// The launch running on this OS thread, and the fibers it reuses from launch to launch.
struct Launch {
  std::vector<std::unique_ptr<Fiber>> fibers;  // never moved: contexts point into themselves
  unsigned int threads = 0;                    // fibers of the current block
  ucontext_t scheduler;
  Fiber* running = nullptr;
  const std::function<void()>* thread = nullptr;
  std::exception_ptr error;
  std::optional<std::mt19937_64> random;  // seeded at the first launch, where a bad seed can throw
};

thread_local Launch launch_state;

Fiber& running_fiber() {
  if (launch_state.running == nullptr) fail("CUDA device functions called outside a kernel");
  return *launch_state.running;
}

void fiber_main() {
  Launch& launch = launch_state;
  try {
    (*launch.thread)();
  } catch (...) {
    if (!launch.error) launch.error = std::current_exception();
  }
  launch.running->state = State::kReturned;
}  // resumes the scheduler (uc_link)

void wait(State barrier) {
  Fiber& self = running_fiber();
  self.state = barrier;
  swapcontext(&self.context, &launch_state.scheduler);
}

// Lanes of `warp` among the block's threads.
std::pair<unsigned int, unsigned int> warp_lanes(int warp) {
  const unsigned int first = static_cast<unsigned int>(warp) * warpSize;
  return {first, std::min(first + warpSize, launch_state.threads)};
}

unsigned int full_mask(int warp) {
  const auto [first, end] = warp_lanes(warp);
  return end - first == 32 ? 0xffffffffu : (1u << (end - first)) - 1;
}

std::string describe(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

// Opens the barriers every thread they need waits at; false when every thread has returned.
bool open_barriers(Launch& launch, const dim3& block) {
  bool opened = false;
  for (int warp = 0; static_cast<unsigned int>(warp) * warpSize < launch.threads; ++warp) {
    const auto [first, end] = warp_lanes(warp);
    const bool all_wait = std::all_of(launch.fibers.begin() + first, launch.fibers.begin() + end,
                                      [](const auto& f) { return f->state == State::kAtWarpBarrier; });
    if (!all_wait) continue;
    for (unsigned int i = first; i < end; ++i) launch.fibers[i]->state = State::kRunnable;
    opened = true;
  }
  if (opened) return true;
  const auto begin = launch.fibers.begin(), end = begin + launch.threads;
  const auto count = [&](State s) { return std::count_if(begin, end, [s](const auto& f) { return f->state == s; }); };
  const auto returned = count(State::kReturned), at_block_barrier = count(State::kAtBlockBarrier);
  if (returned == launch.threads) return false;
  if (at_block_barrier == launch.threads) {
    for (auto it = begin; it != end; ++it) (*it)->state = State::kRunnable;
    return true;
  }
  fail("deadlock in block " + describe(block) + ": " + std::to_string(at_block_barrier) +
       " threads wait at __syncthreads, " + std::to_string(count(State::kAtWarpBarrier)) +
       " at a warp shuffle or __syncwarp whose other lanes do not, and " + std::to_string(returned) +
       " have returned; every thread of the block must reach each __syncthreads, and every lane of a warp "
       "each shuffle (on a GPU this hangs or gives undefined results)");
}

void run_block(Launch& launch, const dim3& block, const dim3& block_dim, const dim3& grid_dim) {
  for (unsigned int i = 0; i < launch.threads; ++i) {
    Fiber& fiber = *launch.fibers[i];
    const dim3 thread(i % block_dim.x, i / block_dim.x % block_dim.y, i / (block_dim.x * block_dim.y));
    fiber.index = {thread, block, block_dim, grid_dim};
    fiber.warp = static_cast<int>(i / warpSize);
    fiber.lane = static_cast<int>(i % warpSize);
    fiber.state = State::kRunnable;
    fiber.context.uc_stack.ss_sp = fiber.stack.bottom();
    fiber.context.uc_stack.ss_size = kStackBytes;
    fiber.context.uc_link = &launch.scheduler;
    makecontext(&fiber.context, fiber_main, 0);
  }
  std::vector<unsigned int> order(launch.threads);
  std::iota(order.begin(), order.end(), 0u);
  do {
    std::shuffle(order.begin(), order.end(), *launch.random);
    for (const unsigned int i : order) {
      Fiber& fiber = *launch.fibers[i];
      if (fiber.state != State::kRunnable) continue;
      launch.running = &fiber;
      swapcontext(&launch.scheduler, &fiber.context);
      launch.running = nullptr;
      // The other threads are abandoned where they wait; the next launch starts their fibers afresh.
      if (launch.error) std::rethrow_exception(std::exchange(launch.error, nullptr));
    }
  } while (open_barriers(launch, block));
}

void check_launch(const dim3& grid, const dim3& block) {
  const unsigned long long threads = 1ull * block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
    fail("invalid launch configuration <<<" + describe(grid) + ", " + describe(block) +
         ">>> (at most 1024 threads per block, 64 along z, and a non-empty grid of at most (2^31 - 1, 65535, 65535))");
  }
}

}  // namespace

std::uint64_t seed() {
  static const std::uint64_t value = [] {
    if (const char* text = std::getenv(kSeedVariable)) {
      char* end = nullptr;
      const unsigned long long parsed = std::strtoull(text, &end, 10);
      if (*text == '\0' || *end != '\0') {
        fail(std::string("$") + kSeedVariable + " must be an unsigned integer, got '" + text + "'");
      }
      return static_cast<std::uint64_t>(parsed);
    }
    const std::uint64_t drawn = std::random_device{}();
    std::fprintf(stderr,
                 "pixelfolder_ops CUDA emulation: block and thread orders drawn from seed %llu (%s=%llu replays "
                 "them)\n",
                 static_cast<unsigned long long>(drawn), kSeedVariable, static_cast<unsigned long long>(drawn));
    return drawn;
  }();
  return value;
}

const ThreadIndex& current() { return running_fiber().index; }

int lane() { return running_fiber().lane; }

void warp_exchange(unsigned int mask, const void* value, void* result, std::size_t bytes, int source) {
  Fiber& self = running_fiber();
  if (mask != full_mask(self.warp)) {
    fail("warp shuffles and __syncwarp must name every lane of the warp in their mask (partial warps are not "
         "emulated)");
  }
  if (bytes > kMaxShuffleBytes) fail("a warp shuffle moves at most 16 bytes");
  std::memcpy(self.published, value, bytes);
  wait(State::kAtWarpBarrier);  // every lane has published
  const auto [first, end] = warp_lanes(self.warp);
  if (source >= 0 && first + source >= end) fail("a warp shuffle reads a lane the block does not have");
  std::memcpy(result, source < 0 ? self.published : launch_state.fibers[first + source]->published, bytes);
  wait(State::kAtWarpBarrier);  // every lane has read before any publishes again
}

void run_grid(dim3 grid, dim3 block, const std::function<void()>& thread) {
  check_launch(grid, block);
  Launch& launch = launch_state;
  if (launch.thread != nullptr) fail("kernels launched from a kernel are not emulated");
  if (!launch.random) launch.random.emplace(seed());
  launch.threads = block.x * block.y * block.z;
  while (launch.fibers.size() < launch.threads) {
    auto fiber = std::make_unique<Fiber>();
    getcontext(&fiber->context);
    launch.fibers.push_back(std::move(fiber));
  }
  std::vector<std::uint64_t> order(1ull * grid.x * grid.y * grid.z);
  std::iota(order.begin(), order.end(), std::uint64_t{0});
  std::shuffle(order.begin(), order.end(), *launch.random);
  struct Running {  // ends the launch however run_block leaves
    Launch& launch;
    ~Running() { launch.thread = nullptr; }
  } running{launch};
  launch.thread = &thread;
  for (const std::uint64_t b : order) {
    const dim3 index(b % grid.x, b / grid.x % grid.y, b / (1ull * grid.x * grid.y));
    run_block(launch, index, block, grid);
  }
}

}  // namespace pixelfolder::cuda_emulation

void __syncthreads() { pixelfolder::cuda_emulation::wait(pixelfolder::cuda_emulation::State::kAtBlockBarrier); }

void __syncwarp(unsigned int mask) {
  unsigned char unused = 0;
  pixelfolder::cuda_emulation::warp_exchange(mask, &unused, &unused, 1, -1);
}
