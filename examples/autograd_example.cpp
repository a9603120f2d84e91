// A tensor graph and its gradients: the README's example, built and run by the tests.
#include <iostream>

#include "autograd/ops.h"
#include "tensor/random.h"

int main() {
  using namespace tl;
  manual_seed(0);
  Tensor x = randn({4, 3});                                   // a batch of 4 inputs
  Tensor w = randn({3, 2}, TensorOptions().with_requires_grad());
  Tensor b = zeros({2}, TensorOptions().with_requires_grad());
  Tensor target = tensor({1, 0, 0, 1, 1, 1, 0, 0}).view({4, 2});

  Tensor logits = matmul(x, w) + b;                            // (4, 2), b broadcast over rows
  Tensor loss = binary_cross_entropy_with_logits(gelu(logits), target);
  loss.backward();                                             // fills w.grad() and b.grad()

  std::cout << "loss   = " << loss.item() << "\n";
  std::cout << "dL/dw  = " << w.grad() << "\n";
  std::cout << "dL/db  = " << b.grad() << "\n";
  {
    NoGradGuard no_grad;                                       // an SGD step, not recorded
    w.copy_(w - 0.1 * w.grad());
  }
  std::cout << "w.grad_fn after the step: " << (w.grad_fn() ? "set" : "none (still a leaf)") << "\n";
}
