// The CUDA emulation's scheduler (cuda_emulation.h): blocks one after another in a random order,
// a block's threads as fibers (their own stacks, switched between) that run, in a random order,
// until each waits at a barrier or returns; a barrier opens when every thread it needs waits at it.
// And its memory checks (checked_memory.h): the reports of a launch, and the shadow maps its races
// are found in.
#include "cuda_emulation.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
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
constexpr std::size_t kReportsShownPerKind = 3;
constexpr const char* kSeedVariable = "PIXELFOLDER_CUDA_EMULATION_SEED";

[[noreturn]] void fail(const std::string& message) { throw std::runtime_error("CUDA emulation: " + message); }

// An error of the launch being run: run_grid adds which launch it is.
struct LaunchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

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
  void* top() const { return static_cast<char*>(bottom()) + kStackBytes; }

 private:
  std::size_t page_;
  void* base_;
};

// Where a fiber (or the scheduler, on the OS thread's own stack) resumes. On x86-64 a switch saves the
// callee-saved registers on the stack it leaves and restores them from the one it enters (a few
// nanoseconds); swapcontext also saves the signal mask, two system calls per switch, which dominated
// the emulation's time in kernels with barriers. The floating-point control words are the OS thread's,
// shared by its fibers (no kernel changes them; saving them would serialize the pipeline each switch).
#if defined(__x86_64__)
extern "C" __attribute__((visibility("hidden"))) void pixelfolder_cuda_emulation_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .hidden pixelfolder_cuda_emulation_switch
  .type pixelfolder_cuda_emulation_switch, @function
pixelfolder_cuda_emulation_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size pixelfolder_cuda_emulation_switch, .-pixelfolder_cuda_emulation_switch
)");

struct Context {
  void* stack_pointer = nullptr;
};

// A context that starts `entry` (which never returns) on `stack`: the frame a switch pops, with
// `entry` as the return address, entered with the stack aligned as after a call.
void prepare(Context& context, const Stack& stack, void (*entry)()) {
  auto* top = static_cast<std::uint64_t*>(stack.top());  // 16-byte aligned
  std::uint64_t* frame = top - 8;
  std::fill(frame, frame + 6, 0);                      // r15, r14, r13, r12, rbx, rbp
  frame[6] = reinterpret_cast<std::uint64_t>(entry);  // popped by ret
  frame[7] = 0;                                        // entry's return address: none
  context.stack_pointer = frame;
}

void jump(Context& from, const Context& to) {
  pixelfolder_cuda_emulation_switch(&from.stack_pointer, to.stack_pointer);
}
#else
struct Context {
  ucontext_t state;
};

void prepare(Context& context, const Stack& stack, void (*entry)()) {
  getcontext(&context.state);
  context.state.uc_stack.ss_sp = stack.bottom();
  context.state.uc_stack.ss_size = kStackBytes;
  context.state.uc_link = nullptr;
  makecontext(&context.state, entry, 0);
}

void jump(Context& from, const Context& to) { swapcontext(&from.state, &to.state); }
#endif

enum class State { kNotStarted, kRunnable, kAtBlockBarrier, kAtWarpBarrier, kReturned };

struct Fiber;

// One thread of the block being run.
struct Thread {
  ThreadIndex index;
  std::uint16_t linear;  // threadIdx, x fastest
  int warp, lane;
  State state;
  Fiber* fiber;  // while started and not returned
  // This lane's value at its warp exchanges, alternately in one buffer and the other: a lane cannot
  // pass the next exchange's barrier before every lane has read the last one.
  unsigned char published[2][kMaxShuffleBytes];
  unsigned int exchanges;
};

// Runs threads: the thread it was given, then, while the scheduler would start the next thread of its
// order next, that one, so that a block whose threads meet no barrier runs on one fiber.
struct Fiber {
  Context context;
  Stack stack;
  Thread* thread = nullptr;  // null: idle
  bool started = false;      // false: at the start of fiber_main
};

constexpr std::size_t kBeforeFirst = static_cast<std::size_t>(-1);  // a cursor whose next place is 0

// One element's accesses in a launch's global shadow map: the block (linear index + 1, 0 for none)
// and thread that last wrote it, and the first block and thread that read it (kSeveralBlocks set
// when other blocks read it too).
struct GlobalShadow {
  std::uint32_t writer_block = 0, reader_block = 0;
  std::uint16_t writer_thread = 0, reader_thread = 0;
};
constexpr std::uint32_t kSeveralBlocks = 0x80000000u;

// What the memory checks report, and how the launch's error counts them.
enum Problem { kOutOfBounds, kSharedOutOfBounds, kSharedRace, kUninitializedShared, kBlockRace, kProblems };
constexpr const char* kProblemNames[kProblems] = {"out-of-bounds accesses", "out-of-bounds shared-memory accesses",
                                                  "shared-memory races", "uninitialized shared-memory reads",
                                                  "races between blocks"};

// A tensor the launch may write, with a shadow entry per element.
struct Region {
  std::uintptr_t begin, end;
  std::size_t element_bytes;
  std::vector<GlobalShadow> shadow;
};

// The launch running on this OS thread, and the fibers it reuses from launch to launch.
struct Launch {
  std::vector<std::unique_ptr<Fiber>> fibers;  // never moved: contexts point into themselves
  std::vector<Fiber*> idle;
  std::vector<Thread> threads;        // of the current block
  std::vector<unsigned int> order;    // the threads' order in the current round
  std::size_t cursor = 0;             // the place in `order` of the thread running
  Context scheduler;
  Thread* running = nullptr;
  Fiber* starting = nullptr;  // the fiber fiber_main starts on
  const std::function<void()>* thread = nullptr;
  std::exception_ptr error;
  std::optional<std::mt19937_64> random;  // seeded at the first launch, where a bad seed can throw

  // What the memory checks need: the launch, the block (linear index + 1) and the epochs.
  const void* kernel = nullptr;
  dim3 grid, block_dim;
  std::uint32_t block_id = 0;
  std::uint64_t epoch = 0;             // block barriers opened on this OS thread, and blocks started
  std::uint64_t block_first_epoch = 0;  // the epoch the current block started in
  std::vector<std::uint32_t> warp_epochs;
  std::vector<TensorExtent> watched;  // tensors to shadow from the launch's start
  std::vector<Region> regions;        // empty for a launch of one block
  bool track_blocks = false;
  std::size_t region_hint = 0;
  std::vector<std::string> reports;
  std::size_t report_counts[kProblems] = {};
};

// Each OS thread's launch state (its fibers), made at its first launch. One launch runs at a time in
// the process (run_grid holds launch_mutex), so that device code, which reads it on every access, finds
// the running launch and thread in plain globals: thread_local variables of a shared library cost a
// call each.
thread_local std::unique_ptr<Launch> launch_owner;
std::mutex launch_mutex;
Launch* active_launch = nullptr;

Launch& launch_state() {
  if (!launch_owner) launch_owner = std::make_unique<Launch>();
  return *launch_owner;
}

Thread& running_thread() {
  if (active_launch == nullptr || active_launch->running == nullptr) called_outside_a_kernel();
  return *active_launch->running;
}

void set_running(Launch& launch, Thread* thread) {
  launch.running = thread;
  running_index = thread == nullptr ? nullptr : &thread->index;
}

std::string describe(const dim3& d) {
  return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
}

dim3 unflatten(std::uint64_t i, const dim3& extent) {
  return dim3(i % extent.x, i / extent.x % extent.y, i / (1ull * extent.x * extent.y));
}

// --- Kernel names ---------------------------------------------------------------------------------------

std::string demangled(const char* symbol) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> name(abi::__cxa_demangle(symbol, nullptr, nullptr, &status), std::free);
  return status == 0 ? name.get() : symbol;
}

// "fold_kernel<float, true, int>" from the demangled signature: this package's namespaces and the
// parameter list dropped.
std::string short_kernel_name(std::string name) {
  for (const std::string prefix : {"(anonymous namespace)::", "pixelfolder::"}) {
    for (std::size_t at; (at = name.find(prefix)) != std::string::npos;) name.erase(at, prefix.size());
  }
  name = name.substr(0, name.find('('));
  return name.rfind("void ", 0) == 0 ? name.substr(5) : name;  // a template's return type
}

// The name of the function at `address`, from the symbol table of the shared object holding it: the
// kernels are local symbols, which dladdr does not see.
std::string function_name(const void* address) {
  Dl_info info;
  if (dladdr(address, &info) == 0 || info.dli_fname == nullptr) return "";
  if (info.dli_sname != nullptr && info.dli_saddr == address) return demangled(info.dli_sname);
  std::ifstream file(info.dli_fname, std::ios::binary);
  const std::vector<char> image((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  if (image.size() < sizeof(ElfW(Ehdr))) return "";
  const auto* header = reinterpret_cast<const ElfW(Ehdr)*>(image.data());
  if (std::memcmp(header->e_ident, ELFMAG, SELFMAG) != 0 ||
      header->e_shoff + 1ull * header->e_shnum * sizeof(ElfW(Shdr)) > image.size()) {
    return "";
  }
  const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(image.data() + header->e_shoff);
  const auto offset = reinterpret_cast<std::uintptr_t>(address) - reinterpret_cast<std::uintptr_t>(info.dli_fbase);
  for (int s = 0; s < header->e_shnum; ++s) {
    const ElfW(Shdr)& symbols = sections[s];
    if (symbols.sh_type != SHT_SYMTAB || symbols.sh_link >= header->e_shnum) continue;
    const ElfW(Shdr)& strings = sections[symbols.sh_link];
    if (symbols.sh_offset + symbols.sh_size > image.size() || strings.sh_offset + strings.sh_size > image.size()) {
      continue;
    }
    const auto* begin = reinterpret_cast<const ElfW(Sym)*>(image.data() + symbols.sh_offset);
    for (const auto* symbol = begin; symbol < begin + symbols.sh_size / sizeof(ElfW(Sym)); ++symbol) {
      if (ELF64_ST_TYPE(symbol->st_info) == STT_FUNC && symbol->st_value == offset &&
          symbol->st_name < strings.sh_size) {
        return demangled(image.data() + strings.sh_offset + symbol->st_name);
      }
    }
  }
  return "";
}

std::string kernel_name(const void* kernel) {
  static std::mutex mutex;
  static std::map<const void*, std::string> names;
  const std::lock_guard<std::mutex> lock(mutex);
  auto found = names.find(kernel);
  if (found == names.end()) {
    const std::string name = function_name(kernel);
    char unknown[64];
    std::snprintf(unknown, sizeof(unknown), "the kernel at %p", kernel);
    found = names.emplace(kernel, name.empty() ? unknown : short_kernel_name(name)).first;
  }
  return found->second;
}

std::string describe_launch(const Launch& launch) {
  return kernel_name(launch.kernel) + "<<<" + describe(launch.grid) + ", " + describe(launch.block_dim) + ">>>";
}

// --- Reports ------------------------------------------------------------------------------------------


// Counts a problem; true when the error is to show it (the first few of each kind: the others are
// counted only, which keeps a bug that fires on every element from costing a string each).
bool shown_report(Problem problem) { return ++active_launch->report_counts[problem] <= kReportsShownPerKind; }

std::size_t report_total(const Launch& launch) {
  return std::accumulate(std::begin(launch.report_counts), std::end(launch.report_counts), std::size_t{0});
}

void add_report(std::string report) { active_launch->reports.push_back(std::move(report)); }

std::string thread_of_block(unsigned int linear, std::uint32_t block_id) {
  const Launch& launch = *active_launch;
  return "thread " + describe(unflatten(linear, launch.block_dim)) + " of block " +
         describe(unflatten(block_id - 1, launch.grid));
}

std::string running_thread_name() { return thread_of_block(running_thread().linear, active_launch->block_id); }

const char* verb(Access access) { return access == Access::kRead ? "reads" : "writes"; }

std::string at_offset(const TensorExtent& tensor, std::ptrdiff_t offset) {
  return "`" + std::string(tensor.name) + "` at offset " + std::to_string(offset);
}

// "[3][256]"
std::string extents(const SharedLayout& layout) {
  std::string text;
  for (int d = 0; d < layout.rank; ++d) text += "[" + std::to_string(layout.dims[d]) + "]";
  return text;
}

// "[1][37] of a shared array [3][256]"
std::string shared_element(const SharedLayout& layout, std::ptrdiff_t flat) {
  std::string index;
  std::ptrdiff_t stride = 1;
  for (int d = 0; d < layout.rank; ++d) stride *= layout.dims[d];
  for (int d = 0; d < layout.rank; ++d) {
    stride /= layout.dims[d];
    index += "[" + std::to_string(flat / stride) + "]";
    flat %= stride;
  }
  return index + " of a shared array " + extents(layout);
}

// "1500 uninitialized shared-memory reads, 12 shared-memory races; the first of each:" and the reports.
std::string reports_text(const Launch& launch) {
  std::string text;
  for (int problem = 0; problem < kProblems; ++problem) {
    if (launch.report_counts[problem] == 0) continue;
    text += (text.empty() ? "" : ", ") + std::to_string(launch.report_counts[problem]) + " " + kProblemNames[problem];
  }
  if (launch.report_counts[kOutOfBounds] + launch.report_counts[kSharedOutOfBounds] > 0) {
    text += " (the out-of-bounds accesses were skipped: reads gave 0, writes were dropped)";
  }
  text += report_total(launch) > launch.reports.size() ? "; the first of each kind, in the order found:" : ":";
  for (const auto& report : launch.reports) text += "\n  - " + report;
  return text;
}

// --- Global shadow map ----------------------------------------------------------------------------

Region* region_of(Launch& launch, std::uintptr_t address) {
  if (launch.region_hint < launch.regions.size()) {
    Region& hinted = launch.regions[launch.region_hint];
    if (hinted.begin <= address && address < hinted.end) return &hinted;
  }
  for (std::size_t i = 0; i < launch.regions.size(); ++i) {
    Region& region = launch.regions[i];
    if (region.begin <= address && address < region.end) {
      launch.region_hint = i;
      return &region;
    }
  }
  return nullptr;
}

void add_region(Launch& launch, const TensorExtent& tensor) {
  if (tensor.last < tensor.first) return;
  const auto data = reinterpret_cast<std::uintptr_t>(tensor.data);
  const std::uintptr_t begin = data + tensor.first * tensor.element_bytes;
  if (region_of(launch, begin) != nullptr) return;  // a second pointer to a tensor already shadowed
  launch.regions.push_back({begin, data + (tensor.last + 1) * tensor.element_bytes, tensor.element_bytes,
                            std::vector<GlobalShadow>(static_cast<std::size_t>(tensor.last - tensor.first + 1))});
}

void report_block_race(const TensorExtent& tensor, std::ptrdiff_t offset, Access access, const char* earlier,
                       std::uint32_t block, std::uint16_t thread) {
  if (!shown_report(kBlockRace)) return;
  const std::string other = block == 0 ? std::string("another block")
                                       : thread_of_block(thread, block & ~kSeveralBlocks);
  add_report("race between blocks on " + at_offset(tensor, offset) + ": " + running_thread_name() + " " +
             verb(access) + " it, and " + other + " " + earlier + " it (not atomically)");
}

void record_in_shadow(GlobalShadow& entry, const TensorExtent& tensor, std::ptrdiff_t offset, Access access) {
  const Launch& launch = *active_launch;
  const std::uint32_t block = launch.block_id;
  const std::uint16_t thread = launch.running->linear;
  if (entry.writer_block != 0 && entry.writer_block != block) {
    report_block_race(tensor, offset, access, "wrote", entry.writer_block, entry.writer_thread);
  }
  if (access == Access::kRead) {
    if (entry.reader_block == 0) {
      entry.reader_block = block;
      entry.reader_thread = thread;
    } else if ((entry.reader_block & ~kSeveralBlocks) != block) {
      entry.reader_block |= kSeveralBlocks;
    }
    return;
  }
  const std::uint32_t reader = entry.reader_block & ~kSeveralBlocks;
  if (reader != 0 && reader != block) {
    report_block_race(tensor, offset, access, "read", reader, entry.reader_thread);
  } else if (reader == block && (entry.reader_block & kSeveralBlocks) != 0) {
    report_block_race(tensor, offset, access, "read", 0, 0);
  }
  entry.writer_block = block;
  entry.writer_thread = thread;
}

// --- Shared shadow ------------------------------------------------------------------------------------

// Whether the access of `earlier` (a thread of the block, in `warp_epoch` of its warp) in the current
// block epoch comes before one of `thread`: the same thread, or a warp barrier of their warp between.
bool ordered(std::uint16_t earlier, std::uint32_t warp_epoch, std::uint16_t thread) {
  return earlier == thread ||
         (earlier / warpSize == thread / warpSize && warp_epoch != active_launch->warp_epochs[thread / warpSize]);
}

void report_shared_race(const SharedPlace& place, Access access, const char* earlier, std::uint16_t other) {
  if (!shown_report(kSharedRace)) return;
  add_report("shared-memory race: " + running_thread_name() + " " + verb(access) + " " +
             shared_element(*place.layout, place.flat) + ", which " +
             thread_of_block(other, active_launch->block_id) + " " + earlier + " with no __syncthreads between");
}

// --- Fibers ---------------------------------------------------------------------------------------------

Fiber* take_idle_fiber(Launch& launch);

// Where to switch when the running thread stops (waits at a barrier or returns): to the next thread of
// the round's order that can run, a thread not started yet running on `free_fiber` (a fiber whose
// thread returned) when given, else on an idle fiber; or to the scheduler when the round is over.
// `free_fiber`, unless it runs the next thread, becomes idle. Threads switch to one another directly:
// one switch per thread and barrier.
Context& next_context(Launch& launch, Fiber* free_fiber) {
  while (++launch.cursor < launch.order.size()) {
    Thread& thread = launch.threads[launch.order[launch.cursor]];
    if (thread.state == State::kNotStarted) {
      Fiber* fiber = free_fiber != nullptr ? free_fiber : take_idle_fiber(launch);
      fiber->thread = &thread;
      thread.fiber = fiber;
      thread.state = State::kRunnable;
      set_running(launch, &thread);
      return fiber->context;
    }
    if (thread.state == State::kRunnable) {
      if (free_fiber != nullptr) launch.idle.push_back(free_fiber);
      set_running(launch, &thread);
      return thread.fiber->context;
    }
  }
  if (free_fiber != nullptr) launch.idle.push_back(free_fiber);
  set_running(launch, nullptr);
  return launch.scheduler;
}

void fiber_main() {
  Launch& launch = *active_launch;
  Fiber& self = *launch.starting;
  for (;;) {
    Thread& thread = *self.thread;
    try {
      (*launch.thread)();
    } catch (...) {
      if (!launch.error) launch.error = std::current_exception();
    }
    thread.state = State::kReturned;
    thread.fiber = nullptr;
    self.thread = nullptr;
    if (launch.error) {
      launch.idle.push_back(&self);
      set_running(launch, nullptr);
      jump(self.context, launch.scheduler);
    } else {
      Context& next = next_context(launch, &self);
      if (&next != &self.context) jump(self.context, next);
    }
    // Here with a thread to run: the next one of the order, or (after a jump) one assigned while idle.
  }
}

void reset(Fiber& fiber) {
  prepare(fiber.context, fiber.stack, fiber_main);
  fiber.thread = nullptr;
  fiber.started = false;
}

Fiber* take_idle_fiber(Launch& launch) {
  if (launch.idle.empty()) {
    launch.fibers.push_back(std::make_unique<Fiber>());
    reset(*launch.fibers.back());
    launch.idle.push_back(launch.fibers.back().get());
  }
  Fiber* fiber = launch.idle.back();
  launch.idle.pop_back();
  if (!fiber->started) {  // fiber_main takes it from here when first switched to
    fiber->started = true;
    launch.starting = fiber;
  }
  return fiber;
}

// Fibers a failed launch abandoned mid-thread start afresh.
void reset_fibers(Launch& launch) {
  launch.idle.clear();
  for (auto& fiber : launch.fibers) {
    if (fiber->thread != nullptr) reset(*fiber);
    launch.idle.push_back(fiber.get());
  }
}

void wait(State barrier) {
  Thread& self = running_thread();
  self.state = barrier;
  jump(self.fiber->context, next_context(*active_launch, nullptr));
}

// Lanes of `warp` among the block's threads.
std::pair<unsigned int, unsigned int> warp_lanes(int warp) {
  const unsigned int first = static_cast<unsigned int>(warp) * warpSize;
  return {first, std::min<unsigned int>(first + warpSize, active_launch->threads.size())};
}

unsigned int full_mask(int warp) {
  const auto [first, end] = warp_lanes(warp);
  return end - first == 32 ? 0xffffffffu : (1u << (end - first)) - 1;
}

// "3 threads ((0, 0, 0), (2, 0, 0), (4, 0, 0))", the first few named.
std::string threads_in(const Launch& launch, State state) {
  std::string names;
  unsigned int count = 0;
  for (const Thread& thread : launch.threads) {
    if (thread.state != state) continue;
    if (++count <= 3) names += (count > 1 ? ", " : "") + describe(thread.index.thread);
  }
  if (count > 3) names += ", ...";
  return std::to_string(count) + (count == 1 ? " thread" : " threads") + (count ? " (" + names + ")" : "");
}

// Opens the barriers every thread they need waits at; false when every thread has returned.
bool open_barriers(Launch& launch, const dim3& block) {
  bool opened = false;
  for (int warp = 0; static_cast<std::size_t>(warp) * warpSize < launch.threads.size(); ++warp) {
    const auto [first, end] = warp_lanes(warp);
    const bool all_wait = std::all_of(launch.threads.begin() + first, launch.threads.begin() + end,
                                      [](const Thread& t) { return t.state == State::kAtWarpBarrier; });
    if (!all_wait) continue;
    for (unsigned int i = first; i < end; ++i) launch.threads[i].state = State::kRunnable;
    ++launch.warp_epochs[warp];
    opened = true;
  }
  if (opened) return true;
  const auto count = [&](State s) {
    return static_cast<std::size_t>(
        std::count_if(launch.threads.begin(), launch.threads.end(), [s](const Thread& t) { return t.state == s; }));
  };
  if (count(State::kReturned) == launch.threads.size()) return false;
  if (count(State::kAtBlockBarrier) == launch.threads.size()) {
    for (Thread& thread : launch.threads) thread.state = State::kRunnable;
    ++launch.epoch;
    return true;
  }
  throw LaunchError("deadlock in block " + describe(block) + ": " + threads_in(launch, State::kAtBlockBarrier) +
                    " wait at __syncthreads, " + threads_in(launch, State::kAtWarpBarrier) +
                    " at a warp shuffle or __syncwarp whose other lanes do not, and " +
                    threads_in(launch, State::kReturned) +
                    " have returned; every thread of the block must reach each __syncthreads, and every lane of a "
                    "warp each shuffle (on a GPU this hangs or gives undefined results)");
}

void run_block(Launch& launch, std::uint64_t linear_block) {
  const dim3 block = unflatten(linear_block, launch.grid);
  const dim3& block_dim = launch.block_dim;
  launch.block_id = static_cast<std::uint32_t>(linear_block + 1);
  launch.block_first_epoch = ++launch.epoch;
  std::fill(launch.warp_epochs.begin(), launch.warp_epochs.end(), 0);
  for (unsigned int i = 0; i < launch.threads.size(); ++i) {
    Thread& thread = launch.threads[i];
    thread.index = {unflatten(i, block_dim), block, block_dim, launch.grid};
    thread.linear = static_cast<std::uint16_t>(i);
    thread.warp = static_cast<int>(i / warpSize);
    thread.lane = static_cast<int>(i % warpSize);
    thread.state = State::kNotStarted;
    thread.fiber = nullptr;
    thread.exchanges = 0;
  }
  std::iota(launch.order.begin(), launch.order.end(), 0u);
  do {
    std::shuffle(launch.order.begin(), launch.order.end(), *launch.random);
    launch.cursor = kBeforeFirst;
    Context& first = next_context(launch, nullptr);
    if (&first != &launch.scheduler) jump(launch.scheduler, first);  // back when the round is over
    // The other threads are abandoned where they wait; the next launch starts their fibers afresh.
    if (launch.error) std::rethrow_exception(std::exchange(launch.error, nullptr));
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

const ThreadIndex* running_index = nullptr;

void called_outside_a_kernel() { fail("CUDA device functions called outside a kernel"); }

int lane() { return running_thread().lane; }

void warp_exchange(unsigned int mask, const void* value, void* result, std::size_t bytes, int source) {
  Thread& self = running_thread();
  if (mask != full_mask(self.warp)) {
    throw LaunchError("warp shuffles and __syncwarp must name every lane of the warp in their mask (partial warps "
                      "are not emulated)");
  }
  if (bytes > kMaxShuffleBytes) throw LaunchError("a warp shuffle moves at most 16 bytes");
  const unsigned int buffer = self.exchanges++ % 2;
  std::memcpy(self.published[buffer], value, bytes);
  wait(State::kAtWarpBarrier);  // every lane has published
  const auto [first, end] = warp_lanes(self.warp);
  if (source >= 0 && first + source >= end) throw LaunchError("a warp shuffle reads a lane the block does not have");
  const Thread& publisher = source < 0 ? self : active_launch->threads[first + source];
  std::memcpy(result, publisher.published[buffer], bytes);
}

void watch_writes(const TensorExtent& tensor) { launch_state().watched.push_back(tensor); }

void report_out_of_bounds(const TensorExtent& tensor, std::ptrdiff_t offset, Access access) {
  if (!shown_report(kOutOfBounds)) return;
  const std::string what = tensor.data == nullptr
                               ? " through a null pointer (offset " + std::to_string(offset) + ")"
                               : " " + at_offset(tensor, offset) + ", outside its elements (offsets " +
                                     std::to_string(tensor.first) + " to " + std::to_string(tensor.last) + ")";
  add_report(std::string("out-of-bounds ") + (access == Access::kRead ? "read" : "write") + ": " +
             running_thread_name() + " " + verb(access) + what);
}

void record_global(const TensorExtent& tensor, std::ptrdiff_t offset, Access access) {
  Launch& launch = *active_launch;
  if (!launch.track_blocks) return;
  const auto address = reinterpret_cast<std::uintptr_t>(tensor.data) + offset * tensor.element_bytes;
  Region* region = region_of(launch, address);
  if (region == nullptr) {
    if (access == Access::kRead) return;  // not a tensor the launch writes (so far)
    add_region(launch, tensor);
    region = region_of(launch, address);
  }
  // Every element of the region the access overlaps.
  const std::size_t first = (address - region->begin) / region->element_bytes;
  const std::size_t last = std::min((address + tensor.element_bytes - 1 - region->begin) / region->element_bytes,
                                    region->shadow.size() - 1);
  for (std::size_t i = first; i <= last; ++i) record_in_shadow(region->shadow[i], tensor, offset, access);
}

void record_shared(const SharedPlace& place, Access access) {
  const Launch& launch = *active_launch;
  SharedShadow& entry = *place.shadow;
  const std::uint16_t thread = running_thread().linear;
  const std::uint32_t warp_epoch = launch.warp_epochs[thread / warpSize];
  if (access == Access::kRead) {
    if (entry.write_epoch < launch.block_first_epoch) {
      if (shown_report(kUninitializedShared)) {
        add_report("uninitialized shared-memory read: " + running_thread_name() + " reads " +
                   shared_element(*place.layout, place.flat) + ", which no thread of the block has written");
      }
    } else if (entry.write_epoch == launch.epoch && !ordered(entry.writer, entry.writer_warp_epoch, thread)) {
      report_shared_race(place, access, "wrote", entry.writer);
    }
    if (entry.read_epoch != launch.epoch) {
      entry.read_epoch = launch.epoch;
      entry.readers[0] = thread;
      entry.reader_warp_epochs[0] = warp_epoch;
      entry.readers[1] = kNoThread;
    } else if (entry.readers[0] != thread && entry.readers[1] == kNoThread) {
      entry.readers[1] = thread;
      entry.reader_warp_epochs[1] = warp_epoch;
    }
    return;
  }
  if (entry.write_epoch == launch.epoch && !ordered(entry.writer, entry.writer_warp_epoch, thread)) {
    report_shared_race(place, access, "wrote", entry.writer);
  } else if (entry.read_epoch == launch.epoch) {
    for (int r = 0; r < 2; ++r) {
      if (entry.readers[r] != kNoThread && !ordered(entry.readers[r], entry.reader_warp_epochs[r], thread)) {
        report_shared_race(place, access, "read", entry.readers[r]);
        break;
      }
    }
  }
  entry.write_epoch = launch.epoch;
  entry.writer = thread;
  entry.writer_warp_epoch = warp_epoch;
}

void report_shared_out_of_bounds(const SharedPlace& place, Access access) {
  if (!shown_report(kSharedOutOfBounds)) return;
  add_report(std::string("out-of-bounds shared-memory ") + (access == Access::kRead ? "read" : "write") + ": " +
             running_thread_name() + " " + verb(access) + " index " + std::to_string(place.bad_index) +
             " along dimension " + std::to_string(place.bad_dim) + " of a shared array " + extents(*place.layout));
}

void run_grid(const void* kernel, dim3 grid, dim3 block, const std::function<void()>& thread) {
  Launch& launch = launch_state();
  if (launch.thread != nullptr) fail("kernels launched from a kernel are not emulated");
  const std::lock_guard<std::mutex> lock(launch_mutex);
  struct Running {  // ends the launch however it ends
    Launch& launch;
    ~Running() {
      launch.thread = nullptr;
      launch.watched.clear();
      launch.regions.clear();
      launch.reports.clear();
      std::fill(std::begin(launch.report_counts), std::end(launch.report_counts), 0);
      launch.track_blocks = false;
      active_launch = nullptr;
    }
  } running{launch};
  active_launch = &launch;
  check_launch(grid, block);
  if (!launch.random) launch.random.emplace(seed());
  const unsigned int threads = block.x * block.y * block.z;
  launch.threads.resize(threads);
  launch.order.resize(threads);
  launch.warp_epochs.assign((threads + warpSize - 1) / warpSize, 0);
  reset_fibers(launch);
  launch.kernel = kernel;
  launch.grid = grid;
  launch.block_dim = block;
  std::vector<std::uint64_t> order(1ull * grid.x * grid.y * grid.z);
  // Races between blocks need two blocks, and a block number that fits the shadow map's.
  launch.track_blocks = order.size() > 1 && order.size() < kSeveralBlocks;
  if (launch.track_blocks) {
    for (const TensorExtent& tensor : launch.watched) add_region(launch, tensor);
  }
  std::iota(order.begin(), order.end(), std::uint64_t{0});
  std::shuffle(order.begin(), order.end(), *launch.random);
  launch.thread = &thread;
  try {
    for (const std::uint64_t b : order) run_block(launch, b);
  } catch (const LaunchError& error) {
    const std::string reports = report_total(launch) ? "\nand before that, " + reports_text(launch) : "";
    fail(describe_launch(launch) + ": " + error.what() + reports);
  }
  if (report_total(launch)) fail(describe_launch(launch) + ": " + reports_text(launch));
}

}  // namespace pixelfolder::cuda_emulation

void __syncthreads() { pixelfolder::cuda_emulation::wait(pixelfolder::cuda_emulation::State::kAtBlockBarrier); }

void __syncwarp(unsigned int mask) {
  unsigned char unused = 0;
  pixelfolder::cuda_emulation::warp_exchange(mask, &unused, &unused, 1, -1);
}
