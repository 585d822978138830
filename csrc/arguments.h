// How the kernels get their arguments: every op's schema is generated from the op's definition in
// Python (pixelfolder_ops/<op>.py, pixelfolder_ops/_protocol.py), and every kernel entry point takes
// the op's arguments as one `Arguments`, read by the schema's names. An argument's name is spelled in
// its op's definition and where a kernel reads it, nowhere else.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/library.h>

#include <initializer_list>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace pixelfolder {

class Arguments {
 public:
  Arguments(const c10::FunctionSchema& schema, const c10::IValue* values)
      : schema_(&schema), values_(values), op_(op_name(schema)) {}

  // The op's name without its namespace, for messages.
  const char* op() const { return op_.c_str(); }

  const c10::IValue& operator[](const char* name) const {
    const auto index = schema_->argumentIndexWithName(name);
    TORCH_CHECK(index.has_value(), op_, ": the kernel reads an argument '", name, "' that the op's schema ",
                "does not have (", *schema_, ")");
    return values_[*index];
  }

  const at::Tensor& tensor(const char* name) const { return (*this)[name].toTensor(); }
  c10::optional<at::Tensor> optional_tensor(const char* name) const {
    const auto& value = (*this)[name];
    return value.isNone() ? c10::nullopt : c10::optional<at::Tensor>(value.toTensor());
  }
  bool flag(const char* name) const { return (*this)[name].toBool(); }
  int64_t integer(const char* name) const { return (*this)[name].toInt(); }
  std::vector<int64_t> integers(const char* name) const { return (*this)[name].toIntVector(); }
  double real(const char* name) const { return (*this)[name].toDouble(); }
  c10::optional<double> optional_real(const char* name) const {
    const auto& value = (*this)[name];
    return value.isNone() ? c10::nullopt : c10::optional<double>(value.toDouble());
  }

 private:
  static std::string op_name(const c10::FunctionSchema& schema) {
    const auto& name = schema.name();
    return name.substr(name.find("::") + 2);
  }

  const c10::FunctionSchema* schema_;
  const c10::IValue* values_;
  std::string op_;
};

namespace detail {

inline void push_outputs(torch::jit::Stack& stack, at::Tensor output) { stack.emplace_back(std::move(output)); }

template <typename... Outputs>
void push_outputs(torch::jit::Stack& stack, std::tuple<Outputs...> outputs) {
  std::apply([&](auto&&... output) { (stack.emplace_back(std::move(output)), ...); }, std::move(outputs));
}

template <auto kernel>
void call_with_arguments(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const auto count = schema.arguments().size();
  auto outputs = kernel(Arguments(schema, stack->data() + stack->size() - count));
  torch::jit::drop(*stack, count);
  push_outputs(*stack, std::move(outputs));
}

}  // namespace detail

// The dispatcher kernel of an entry point `Output kernel(const Arguments&)` (Output: a Tensor or a tuple
// of them): m.impl("fold", kernel_of<fold_cpu>()).
template <auto kernel>
torch::CppFunction kernel_of() {
  return torch::CppFunction::makeFromBoxedFunction<&detail::call_with_arguments<kernel>>();
}

using NamedValues = std::initializer_list<std::pair<const char*, c10::IValue>>;

// Calls pixelfolder_ops::<name> through the dispatcher, so that it reaches the kernel of the tensors'
// device, with each argument of its schema taken by name from `given`, else from `from` (the caller's
// arguments: the options the two ops share). Returns its outputs.
inline std::vector<c10::IValue> call_op(const char* name, NamedValues given, const Arguments* from = nullptr) {
  const auto op = c10::Dispatcher::singleton().findSchemaOrThrow((std::string("pixelfolder_ops::") + name).c_str(), "");
  torch::jit::Stack stack;
  for (const auto& argument : op.schema().arguments()) {
    const auto* value = static_cast<const c10::IValue*>(nullptr);
    for (const auto& [given_name, given_value] : given) {
      if (argument.name() == given_name) value = &given_value;
    }
    TORCH_CHECK(value != nullptr || from != nullptr, name, ": no value given for argument '", argument.name(), "'");
    stack.push_back(value != nullptr ? *value : (*from)[argument.name().c_str()]);
  }
  op.callBoxed(&stack);
  return stack;
}

inline at::Tensor call_op_for_tensor(const char* name, NamedValues given, const Arguments* from = nullptr) {
  return call_op(name, given, from).at(0).toTensor();
}

inline c10::IValue optional_value(const at::Tensor& tensor) {
  return tensor.defined() ? c10::IValue(tensor) : c10::IValue();
}

}  // namespace pixelfolder
