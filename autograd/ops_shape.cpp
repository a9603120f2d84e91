// cat, pad and center_crop: copies into (or views of) a region, with the region's inverse as backward.
#include "autograd/node.h"
#include "autograd/ops.h"
#include "tensor/kernels.h"

namespace tl {

using Grads = std::vector<Tensor>;

Tensor cat(const std::vector<Tensor>& ts, int64_t dim_in) {
  if (ts.empty()) throw_op_error("cat", "expected a non-empty list of tensors");
  const Tensor& first = ts[0];
  const int64_t d = wrap_dim(dim_in, first.dim(), "cat");
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const Tensor& t = ts[i];
    if (t.dtype() != first.dtype() || t.device() != first.device())
      throw_op_error("cat", "tensor " + std::to_string(i) + " is " + dtype_name(t.dtype()) + " on " + t.device().str() +
                                ", tensor 0 is " + dtype_name(first.dtype()) + " on " + first.device().str());
    bool same = t.dim() == first.dim();
    for (int64_t k = 0; same && k < t.dim(); ++k) same = k == d || t.size(k) == first.size(k);
    if (!same)
      throw_op_error("cat", "tensor " + std::to_string(i) + " has shape " + shape_str(t.shape()) + ", tensor 0 has " +
                                shape_str(first.shape()) + "; all dims but " + std::to_string(d) + " must match");
    out_shape[d] += t.size(d);
  }
  Tensor out = empty(out_shape, first.options());
  std::vector<int64_t> sizes;
  int64_t off = 0;
  for (const Tensor& t : ts) {
    kernels::copy_(out.detach().narrow(d, off, t.size(d)), t);
    sizes.push_back(t.size(d));
    off += t.size(d);
  }
  return record("cat", out, ts, [d, sizes](const Tensor& g, const std::vector<bool>& needs) {
    Grads r(sizes.size());
    int64_t o = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (needs[i]) r[i] = g.narrow(d, o, sizes[i]);
      o += sizes[i];
    }
    return r;
  });
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  if (pads.size() % 2 != 0 || static_cast<int64_t>(pads.size()) > 2 * x.dim())
    throw_op_error("pad", "expected an even number of sizes, at most 2 per dim, got " + std::to_string(pads.size()) +
                              " for input " + shape_str(x.shape()));
  Shape out_shape = x.shape();
  // pads[2k], pads[2k+1]: before and after along dim (ndim - 1 - k)
  for (size_t k = 0; k < pads.size() / 2; ++k) {
    if (pads[2 * k] < 0 || pads[2 * k + 1] < 0)
      throw_op_error("pad", "negative padding " + shape_str(pads) + " is not supported (use narrow)");
    out_shape[x.dim() - 1 - static_cast<int64_t>(k)] += pads[2 * k] + pads[2 * k + 1];
  }
  // The region of the output that holds x.
  auto inner = [pads](Tensor t, const Shape& in_shape) {
    for (size_t k = 0; k < pads.size() / 2; ++k) {
      const int64_t d = t.dim() - 1 - static_cast<int64_t>(k);
      t = t.narrow(d, pads[2 * k], in_shape[d]);
    }
    return t;
  };
  Tensor out = full(out_shape, value, x.options());
  kernels::copy_(inner(out, x.shape()), x);
  return record("pad", out, {x}, [inner, s = x.shape()](const Tensor& g, const std::vector<bool>&) {
    return Grads{inner(g, s)};
  });
}

Tensor center_crop(const Tensor& x, int64_t h, int64_t w) {
  if (x.dim() < 2) throw_op_error("center_crop", "expected at least 2 dims, got " + shape_str(x.shape()));
  const int64_t H = x.size(-2), W = x.size(-1);
  if (h < 0 || w < 0 || h > H || w > W)
    throw_op_error("center_crop", "cannot crop " + shape_str(x.shape()) + " to " + std::to_string(h) + "x" +
                                      std::to_string(w));
  return x.narrow(-2, (H - h) / 2, h).narrow(-1, (W - w) / 2, w);
}

}  // namespace tl
