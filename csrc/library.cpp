// The schema of every posemb op, declared once. Kernels register themselves
// per dispatch key in their own files: csrc/{cpu,cuda,autograd}/X_*.cpp, and
// csrc/X.cpp for Meta (fake) and composite kernels. C++ calls an op through
// its Op<...> in csrc/X_op.h.
#include <torch/library.h>

TORCH_LIBRARY(posemb, m) {
  // y = x * scale + PE(position); see csrc/include/posemb/sinusoidal.h.
  m.def(
      "sinusoidal_add(Tensor x, Tensor? positions=None, Tensor? offsets=None, SymInt offset=0, "
      "int seq_dim=-2, str layout='interleaved', str freqs='vaswani', float base=10000.0, "
      "float scale=1.0, int? padding_idx=None) -> Tensor");
  m.def(
      "sinusoidal_add_(Tensor(a!) x, Tensor? positions=None, Tensor? offsets=None, "
      "SymInt offset=0, int seq_dim=-2, str layout='interleaved', str freqs='vaswani', "
      "float base=10000.0, float scale=1.0, int? padding_idx=None) -> ()");
  m.def("sinusoidal_add_backward(Tensor grad, float scale) -> Tensor");
  m.def(
      "sinusoidal_table(SymInt num_positions, SymInt dim, SymInt offset=0, "
      "str layout='interleaved', str freqs='vaswani', float base=10000.0, "
      "int? padding_idx=None, *, ScalarType? dtype=None, Device? device=None) -> Tensor");
  m.def("make_positions(Tensor input_ids, int padding_idx) -> Tensor");

  // [sin(α p), cos(α p)], exact angles; see csrc/include/posemb/fourier.h.
  m.def("fourier_features(Tensor positions, Tensor frequencies) -> Tensor");
  // The gradient of the frequencies.
  m.def("fourier_features_backward(Tensor grad, Tensor positions, Tensor features) -> Tensor");

  // y = x + weight[position]; see csrc/include/posemb/learned.h.
  m.def(
      "learned_add(Tensor x, Tensor weight, Tensor? positions=None, Tensor? offsets=None, "
      "SymInt offset=0, int seq_dim=-2, int? padding_idx=None) -> Tensor");
  // The gradient of weight (the gradient of x is the incoming gradient).
  m.def(
      "learned_add_backward(Tensor grad, Tensor? positions, Tensor? offsets, SymInt offset, "
      "int seq_dim, SymInt num_embeddings, int? padding_idx) -> Tensor");

  // dropout(LayerNorm(word[ids] + position[pos] + type[types])) -> (out, mean, rstd);
  // see csrc/include/posemb/bert.h.
  m.def(
      "bert_embeddings(Tensor input_ids, Tensor word_weight, Tensor position_weight, "
      "Tensor type_weight, Tensor ln_weight, Tensor ln_bias, Tensor? position_ids=None, "
      "Tensor? token_type_ids=None, SymInt cache_length=0, float eps=1e-12, float dropout_p=0.0, "
      "Tensor? dropout_seed=None, int? word_padding_idx=None, int? position_padding_idx=None) "
      "-> (Tensor, Tensor, Tensor)");
  // Gradients of (word_weight, position_weight, type_weight, ln_weight, ln_bias).
  m.def(
      "bert_embeddings_backward(Tensor grad, Tensor input_ids, Tensor word_weight, "
      "Tensor position_weight, Tensor type_weight, Tensor ln_weight, Tensor mean, Tensor rstd, "
      "Tensor? position_ids, Tensor? token_type_ids, SymInt cache_length, float dropout_p, "
      "Tensor? dropout_seed, int? word_padding_idx, int? position_padding_idx) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");

  // q and k turned by position * inv_freq -> (q_out, k_out); see csrc/include/posemb/rotary.h.
  // k may have zero heads (no k). mrope_section: positions with axes (multimodal, axial).
  m.def(
      "rotary(Tensor q, Tensor k, Tensor inv_freq, Tensor? positions=None, Tensor? offsets=None, "
      "SymInt offset=0, Tensor? cu_seqlens=None, float attention_scaling=1.0, "
      "bool interleaved=False, int seq_dim=1, int[]? mrope_section=None, bool mrope_interleaved=False) "
      "-> (Tensor, Tensor)");
  m.def(
      "rotary_(Tensor(a!) q, Tensor(b!) k, Tensor inv_freq, Tensor? positions=None, "
      "Tensor? offsets=None, SymInt offset=0, Tensor? cu_seqlens=None, "
      "float attention_scaling=1.0, bool interleaved=False, int seq_dim=1, int[]? mrope_section=None, "
      "bool mrope_interleaved=False) -> ()");
  // The gradients of q and k: the rotation by -theta of the incoming gradients.
  m.def(
      "rotary_backward(Tensor grad_q, Tensor grad_k, Tensor inv_freq, Tensor? positions=None, "
      "Tensor? offsets=None, SymInt offset=0, Tensor? cu_seqlens=None, "
      "float attention_scaling=1.0, bool interleaved=False, int seq_dim=1, int[]? mrope_section=None, "
      "bool mrope_interleaved=False) -> (Tensor, Tensor)");

  // Diffusion timestep embeddings of float timesteps; see csrc/include/posemb/timestep.h.
  m.def(
      "timestep_embedding(Tensor timesteps, int embedding_dim, bool flip_sin_to_cos=False, "
      "float downscale_freq_shift=1.0, float scale=1.0, float max_period=10000.0, *, "
      "ScalarType? dtype=None) -> Tensor");
  // The gradient of the timesteps, from the embedding.
  m.def(
      "timestep_embedding_backward(Tensor grad, Tensor timesteps, Tensor embedding, bool flip_sin_to_cos, "
      "float downscale_freq_shift, float scale, float max_period) -> Tensor");

  // y = x + the 2-D sin-cos grid of image patches (with pos_t: the 3-D grid of
  // video patches); see csrc/include/posemb/sincos_2d.h.
  m.def("sincos_2d_add(Tensor x, Tensor pos_h, Tensor pos_w, float base=10000.0, *, Tensor? pos_t=None) -> Tensor");
  m.def(
      "sincos_2d_table(Tensor pos_h, Tensor pos_w, SymInt dim, float base=10000.0, *, "
      "ScalarType? dtype=None, Tensor? pos_t=None) -> Tensor");
}
