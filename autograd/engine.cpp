// The backward pass: order the graph without recursion, push gradients from the root to the
// leaves, check each gradient's shape, accumulate into leaves' .grad, free the graph.
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "autograd/grad_hooks.h"
#include "autograd/grad_mode.h"
#include "autograd/node.h"
#include "tensor/kernels.h"

namespace tl {

namespace {

thread_local GradReadyHook t_grad_ready_hook;

// Nodes reachable from root, each before every node that feeds it (reverse DFS post-order),
// computed with an explicit stack: a deep network's graph is far deeper than the call stack.
std::vector<std::shared_ptr<Node>> topological_order(const std::shared_ptr<Node>& root) {
  std::vector<std::shared_ptr<Node>> post;
  std::unordered_set<Node*> seen{root.get()};
  std::vector<std::pair<std::shared_ptr<Node>, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [node, child] = stack.back();
    if (child < node->next.size()) {
      const std::shared_ptr<Node>& next = node->next[child++].fn;
      if (next && seen.insert(next.get()).second) stack.emplace_back(next, 0);
    } else {
      post.push_back(node);
      stack.pop_back();
    }
  }
  return {post.rbegin(), post.rend()};
}

void accumulate_into_leaf(TensorImpl* leaf, const Tensor& g) {
  if (!leaf->grad) {
    Tensor copy = empty(g.shape(), g.options());  // the leaf owns its gradient: never alias g
    kernels::copy_(copy, g);
    leaf->grad = copy.impl_ptr();
  } else if (const Tensor grad(leaf->grad); grad.is_contiguous()) {
    // In place, as torch: a second backward (gradient accumulation) allocates nothing new. The
    // leaf's gradient never aliases g (first branch), so reading both while writing one is safe.
    kernels::binary(kernels::Binary::Add, grad, g, grad);
  } else {  // a gradient set by hand as a strided view, which may overlap itself: a new tensor
    leaf->grad = kernels::binary(kernels::Binary::Add, grad, g).impl_ptr();
  }
}

void check_gradient(const Node& node, size_t i, const Tensor& g) {
  if (g.shape() != node.input_shapes[i])
    throw std::logic_error(std::string("backward of ") + node.name + ": gradient of input " + std::to_string(i) +
                           " has shape " + shape_str(g.shape()) + ", the input has " +
                           shape_str(node.input_shapes[i]));
  if (g.dtype() != node.input_dtypes[i])
    throw std::logic_error(std::string("backward of ") + node.name + ": gradient of input " + std::to_string(i) +
                           " is " + dtype_name(g.dtype()) + ", the input is " + dtype_name(node.input_dtypes[i]));
}

// How many edges of `order` lead into each leaf: its gradient is final when that many have run.
std::unordered_map<TensorImpl*, size_t> leaf_edge_counts(const std::vector<std::shared_ptr<Node>>& order) {
  std::unordered_map<TensorImpl*, size_t> counts;
  for (const auto& node : order)
    for (const Edge& e : node->next)
      if (e.leaf) ++counts[e.leaf.get()];
  return counts;
}

}  // namespace

GradReadyHookGuard::GradReadyHookGuard(GradReadyHook hook) : previous_(std::move(t_grad_ready_hook)) {
  t_grad_ready_hook = std::move(hook);
}
GradReadyHookGuard::~GradReadyHookGuard() { t_grad_ready_hook = std::move(previous_); }
const GradReadyHook& grad_ready_hook() { return t_grad_ready_hook; }

void run_backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  if (!root.requires_grad())
    throw std::invalid_argument("backward: tensor " + shape_str(root.shape()) +
                                " does not require grad and has no grad_fn");
  Tensor g = grad;
  if (!g.defined()) {
    if (root.numel() != 1)
      throw std::invalid_argument("backward: a gradient can be implied only for a one-element tensor; this one is " +
                                  shape_str(root.shape()) + ", pass the gradient explicitly");
    g = ones_like(root.detach());
  } else if (g.shape() != root.shape() || g.dtype() != root.dtype()) {
    throw std::invalid_argument("backward: gradient " + shape_str(g.shape()) + " " + dtype_name(g.dtype()) +
                                " does not match the tensor " + shape_str(root.shape()) + " " +
                                dtype_name(root.dtype()));
  }
  NoGradGuard no_grad;  // backward functions are not themselves recorded
  if (root.is_leaf()) {
    accumulate_into_leaf(root.impl(), g);
    if (t_grad_ready_hook) t_grad_ready_hook(*root.impl());
    return;
  }

  const std::vector<std::shared_ptr<Node>> order = topological_order(root.grad_fn());
  std::unordered_map<Node*, Tensor> pending{{root.grad_fn().get(), g.detach()}};
  const GradReadyHook hook = t_grad_ready_hook;  // a copy: the hook may not change it under us
  std::unordered_map<TensorImpl*, size_t> leaf_edges_left;
  if (hook) leaf_edges_left = leaf_edge_counts(order);
  for (const std::shared_ptr<Node>& node : order) {
    if (node->released)
      throw std::runtime_error(std::string("backward: the graph through ") + node->name +
                               " was already freed by an earlier backward; call backward(grad, "
                               "/*retain_graph=*/true) the first time to go through it twice");
    auto it = pending.find(node.get());
    Tensor gout = it == pending.end() ? Tensor() : it->second;
    if (it != pending.end()) pending.erase(it);
    if (gout.defined()) {
      std::vector<bool> needs(node->next.size());
      for (size_t i = 0; i < needs.size(); ++i) needs[i] = node->next[i].needed();
      std::vector<Tensor> gin = node->backward(gout, needs);
      if (gin.size() != node->next.size())
        throw std::logic_error(std::string("backward of ") + node->name + ": returned " +
                               std::to_string(gin.size()) + " gradients for " + std::to_string(node->next.size()) +
                               " inputs");
      for (size_t i = 0; i < gin.size(); ++i) {
        const Edge& e = node->next[i];
        if (!e.needed() || !gin[i].defined()) continue;
        check_gradient(*node, i, gin[i]);
        if (e.fn) {
          Tensor& slot = pending[e.fn.get()];
          slot = slot.defined() ? kernels::binary(kernels::Binary::Add, slot, gin[i]) : gin[i];
        } else {
          accumulate_into_leaf(e.leaf.get(), gin[i]);
        }
      }
    }
    if (hook)
      for (const Edge& e : node->next)
        if (e.leaf && --leaf_edges_left[e.leaf.get()] == 0) hook(*e.leaf);
    if (!retain_graph) node->release();
  }
}

}  // namespace tl
