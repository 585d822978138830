// The CUDA emulation's memory checks (csrc/README.md, "The CUDA kernels on the CPU"): what the kernels'
// global pointers and __shared__ arrays are in the emulation build. Every access is checked against
// the tensor or array it belongs to and recorded in a shadow map, so that a launch reports (as
// compute-sanitizer's memcheck, racecheck and synccheck do on a GPU):
//   - an access outside its tensor or shared array: skipped (a read gives 0, a write is dropped);
//   - a shared-memory address written by one thread and read or written by another of the block with
//     no barrier between them, and a read of shared memory no thread of the block has written;
//   - a global address written by one block and read or written by another block of the launch.
// Atomics are exempt from the race rules. The reports are collected while the launch runs; the launch
// then throws one error that lists them. Standard C++ only, as cuda_emulation.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace pixelfolder::cuda_emulation {

enum class Access : unsigned char { kRead, kWrite };

// --- Global memory ------------------------------------------------------------------------------------

// A tensor as a checked pointer sees it: element 0 at `data`, and the offsets (in elements) of its
// first and last elements, so that a strided view checks against every element it has.
struct TensorExtent {
  const void* data;
  std::ptrdiff_t first, last;
  std::size_t element_bytes;
  const char* name;
};

// Out of line (cuda_emulation.cpp). The launch's shadow map tracks the tensors a kernel may write:
// those of its non-const pointer parameters from the start of the launch, others from their first write.
void watch_writes(const TensorExtent& tensor);
// Records an access outside the tensor (the caller skips it).
void report_out_of_bounds(const TensorExtent& tensor, std::ptrdiff_t offset, Access access);
// Records an access of the running thread at `offset` in the shadow map.
void record_global(const TensorExtent& tensor, std::ptrdiff_t offset, Access access);

template <typename T>
class GlobalReference;

// A kernel's pointer into a tensor (device_pointer.h makes it from an at::Tensor and a name). It moves
// as a pointer does; each access is checked against the tensor's elements. `T` is const for inputs.
template <typename T>
class GlobalPointer {
 public:
  using Value = std::remove_const_t<T>;

  GlobalPointer() = default;
  GlobalPointer(std::nullptr_t) {}
  GlobalPointer(T* data, std::ptrdiff_t first, std::ptrdiff_t last, const char* name)
      : tensor_{data, first, last, sizeof(T), name} {}
  // A pointer to a tensor passed where a pointer to its const elements is expected.
  template <typename U, typename = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  GlobalPointer(const GlobalPointer<U>& other) : tensor_(other.tensor_), offset_(other.offset_) {}

  explicit operator bool() const { return tensor_.data != nullptr; }
  GlobalPointer operator+(std::ptrdiff_t n) const { return moved(n); }
  GlobalPointer operator-(std::ptrdiff_t n) const { return moved(-n); }
  GlobalPointer& operator+=(std::ptrdiff_t n) { return *this = moved(n); }
  GlobalPointer& operator-=(std::ptrdiff_t n) { return *this = moved(-n); }

  // Reads of const elements give the value; other elements give a reference to read or assign.
  decltype(auto) operator[](std::ptrdiff_t i) const {
    if constexpr (std::is_const_v<T>) {
      return moved(i).load();
    } else {
      return GlobalReference<T>(moved(i));
    }
  }
  decltype(auto) operator*() const { return (*this)[0]; }

  Value load() const {
    if (!in_bounds()) {
      report_out_of_bounds(tensor_, offset_, Access::kRead);
      return Value();
    }
    record_global(tensor_, offset_, Access::kRead);
    return element();
  }

  void store(const Value& value) const {
    static_assert(!std::is_const_v<T>, "a store through a pointer to const");
    if (!in_bounds()) {
      report_out_of_bounds(tensor_, offset_, Access::kWrite);
      return;
    }
    record_global(tensor_, offset_, Access::kWrite);
    element() = value;
  }

  // An atomic read-modify-write: checked against the tensor, exempt from the race rules.
  template <typename Update>
  Value atomic_update(Update update) const {
    if (!in_bounds()) {
      report_out_of_bounds(tensor_, offset_, Access::kWrite);
      return Value();
    }
    const Value old = element();
    element() = update(old);
    return old;
  }

  // Tracks the tensor's writes from the start of the launch (cuda_emulation::launch calls it).
  void watch_writes() const {
    if (tensor_.data != nullptr) cuda_emulation::watch_writes(tensor_);
  }

 private:
  template <typename U>
  friend class GlobalPointer;

  GlobalPointer moved(std::ptrdiff_t n) const {
    GlobalPointer p = *this;
    p.offset_ += n;
    return p;
  }
  bool in_bounds() const { return tensor_.first <= offset_ && offset_ <= tensor_.last; }
  T& element() const { return static_cast<T*>(const_cast<void*>(tensor_.data))[offset_]; }

  TensorExtent tensor_{nullptr, 0, -1, sizeof(T), "null"};
  std::ptrdiff_t offset_ = 0;
};

// One element of a writable tensor: reads and assignments go through its pointer's checks.
template <typename T>
class GlobalReference {
 public:
  explicit GlobalReference(GlobalPointer<T> pointer) : pointer_(pointer) {}

  operator T() const { return pointer_.load(); }
  template <typename U>
  explicit operator U() const {
    return static_cast<U>(pointer_.load());
  }
  template <typename U>
  const GlobalReference& operator=(const U& value) const {
    pointer_.store(static_cast<T>(value));
    return *this;
  }
  const GlobalReference& operator=(const GlobalReference& other) const { return *this = T(other); }
  template <typename U>
  const GlobalReference& operator+=(const U& value) const {
    return *this = pointer_.load() + value;
  }
  template <typename U>
  const GlobalReference& operator-=(const U& value) const {
    return *this = pointer_.load() - value;
  }
  template <typename U>
  const GlobalReference& operator*=(const U& value) const {
    return *this = pointer_.load() * value;
  }
  // &pointer[i], for atomicAdd.
  GlobalPointer<T> operator&() const { return pointer_; }

 private:
  GlobalPointer<T> pointer_;
};

// --- Shared memory ------------------------------------------------------------------------------------

constexpr std::uint16_t kNoThread = 0xffff;

// Who last accessed one element of a shared array: the launch's barrier epoch (a count of the block
// barriers opened, so two accesses in the same epoch have no __syncthreads between them), the thread
// (x fastest) and its warp's epoch (a count of the warp barriers it opened).
struct SharedShadow {
  std::uint64_t write_epoch = 0, read_epoch = 0;
  std::uint32_t writer_warp_epoch = 0, reader_warp_epochs[2] = {0, 0};
  std::uint16_t writer = kNoThread, readers[2] = {kNoThread, kNoThread};
};

// A shared array's extents, for reports.
struct SharedLayout {
  const int* dims;
  int rank;
};

// Where one element access of a shared array lands: its element and shadow, or (element null) the
// index, along dimension `bad_dim`, that is outside the array.
struct SharedPlace {
  void* element;
  SharedShadow* shadow;
  const SharedLayout* layout;
  std::ptrdiff_t flat;  // the element's index in the flattened array, or the flat index so far
  int bad_dim;
  std::ptrdiff_t bad_index;
};

// Out of line (cuda_emulation.cpp): checks and records an access of the running thread, or reports
// an index outside the array (the caller then skips the access).
void record_shared(const SharedPlace& place, Access access);
void report_shared_out_of_bounds(const SharedPlace& place, Access access);

// One element of a shared array.
template <typename T>
class SharedReference {
 public:
  explicit SharedReference(SharedPlace place) : place_(place) {}

  operator std::remove_const_t<T>() const { return load(); }
  template <typename U>
  explicit operator U() const {
    return static_cast<U>(load());
  }
  template <typename U>
  const SharedReference& operator=(const U& value) const {
    static_assert(!std::is_const_v<T>, "a store into a const shared array");
    if (place_.element == nullptr) {
      report_shared_out_of_bounds(place_, Access::kWrite);
    } else {
      record_shared(place_, Access::kWrite);
      *static_cast<T*>(place_.element) = static_cast<T>(value);
    }
    return *this;
  }
  const SharedReference& operator=(const SharedReference& other) const { return *this = other.load(); }
  template <typename U>
  const SharedReference& operator+=(const U& value) const {
    return *this = load() + value;
  }
  template <typename U>
  const SharedReference& operator-=(const U& value) const {
    return *this = load() - value;
  }
  template <typename U>
  const SharedReference& operator*=(const U& value) const {
    return *this = load() * value;
  }
  // &array[i], for atomicAdd.
  const SharedReference& operator&() const { return *this; }

  std::remove_const_t<T> load() const {
    if (place_.element == nullptr) {
      report_shared_out_of_bounds(place_, Access::kRead);
      return std::remove_const_t<T>();
    }
    record_shared(place_, Access::kRead);
    return *static_cast<const T*>(place_.element);
  }

  // An atomic read-modify-write: checked against the array, exempt from the race rules.
  template <typename Update>
  T atomic_update(Update update) const {
    if (place_.element == nullptr) {
      report_shared_out_of_bounds(place_, Access::kWrite);
      return T();
    }
    T& element = *static_cast<T*>(place_.element);
    const T old = element;
    element = update(old);
    return old;
  }

 private:
  SharedPlace place_;
};

// The sub-array of extents Dims... that starts at `place`.
template <typename T, int Extent, int... Rest>
class SharedView {
 public:
  explicit SharedView(SharedPlace place) : place_(place) {}

  auto operator[](std::ptrdiff_t i) const {
    constexpr std::ptrdiff_t stride = (std::ptrdiff_t{1} * ... * Rest);
    SharedPlace place = place_;
    place.flat += i * stride;
    if (place.element != nullptr && (i < 0 || i >= Extent)) {
      place = {nullptr, nullptr, place_.layout, place_.flat, place_.layout->rank - 1 - int(sizeof...(Rest)), i};
    } else if (place.element != nullptr) {
      place.element = static_cast<std::remove_const_t<T>*>(const_cast<void*>(place.element)) + i * stride;
      place.shadow += i * stride;
    }
    if constexpr (sizeof...(Rest) == 0) {
      return SharedReference<T>(place);
    } else {
      return SharedView<T, Rest...>(place);
    }
  }

 private:
  SharedPlace place_;
};

// A __shared__ array T[Dims[0]][Dims[1]]... with a shadow entry per element (on the GPU the same
// declaration is the plain array: cuda/cuda_common.cuh).
template <typename T, int... Dims>
class SharedArray {
  static_assert(sizeof...(Dims) > 0 && ((Dims > 0) && ...), "a shared array has positive extents");
  static constexpr std::ptrdiff_t kCount = (std::ptrdiff_t{1} * ... * Dims);
  static constexpr int kDims[] = {Dims...};
  static constexpr SharedLayout kLayout{kDims, int(sizeof...(Dims))};

 public:
  auto operator[](std::ptrdiff_t i) { return SharedView<T, Dims...>(place())[i]; }
  auto operator[](std::ptrdiff_t i) const { return SharedView<const T, Dims...>(place())[i]; }

 private:
  SharedPlace place() const { return {const_cast<T*>(values_), shadows_, &kLayout, 0, -1, 0}; }

  T values_[kCount];
  mutable SharedShadow shadows_[kCount];
};

}  // namespace pixelfolder::cuda_emulation

// Atomics on checked global and shared memory (CUDA passes the element's address: &pointer[i]).
template <typename T>
T atomicAdd(::pixelfolder::cuda_emulation::GlobalPointer<T> address, T value) {
  return address.atomic_update([value](T old) { return T(old + value); });
}

template <typename T>
T atomicAdd(const ::pixelfolder::cuda_emulation::SharedReference<T>& element, T value) {
  return element.atomic_update([value](T old) { return T(old + value); });
}
