#pragma once
// A Node is one application of a differentiable op in the graph: it knows how to turn the gradient
// of its output into gradients of its inputs, and where each input's gradient goes next.
#include <functional>
#include <memory>
#include <vector>

#include "tensor/tensor.h"

namespace tl {

// Where an input's gradient goes: the node that produced the input, or the input itself when it is
// a leaf that requires grad. Both empty: the input needs no gradient.
struct Edge {
  std::shared_ptr<Node> fn;
  std::shared_ptr<TensorImpl> leaf;
  bool needed() const { return fn || leaf; }
};

// grad: gradient of the op's output. needs[i]: whether input i wants a gradient.
// Returns one tensor per input, of that input's shape (undefined where not needed).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad, const std::vector<bool>& needs)>;

struct Node {
  const char* name = "";
  std::vector<Edge> next;          // one per input
  std::vector<Shape> input_shapes; // what each gradient must match
  std::vector<DType> input_dtypes;
  BackwardFn backward;             // emptied when the graph is freed
  bool released = false;

  // Drops the saved tensors and the edges: the memory of the graph behind this node is freed.
  void release();

  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  // Iterative: dropping a graph of 100k chained nodes must not recurse 100k destructors deep.
  ~Node();
};

// True when grad mode is on and some input requires grad.
bool any_requires_grad(std::initializer_list<const Tensor*> inputs);

// Makes `out` the result of op `name` applied to `inputs`: when any input requires grad (and grad
// mode is on) a Node with `fn` becomes out's grad_fn. Undefined inputs (an absent bias) are allowed.
// Returns out.
Tensor record(const char* name, Tensor out, const std::vector<Tensor>& inputs, BackwardFn fn);

// The gradient-flow half of the engine (engine.cpp).
void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph);

}  // namespace tl
