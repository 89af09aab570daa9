// posemb._cpp: the C++ modules (posemb::nn) bound to Python with pybind11 and
// torch's module binding (torch/python.h), as posemb.cpp.<Name>. Each class is
// a torch.nn.Module (torch.nn.cpp.ModuleWrapper) driving the very C++ object a
// LibTorch program uses. The ops are not registered here: this module links
// libposemb.so, the library `import posemb` has loaded (one copy of the
// registrations in the process). Constructors and forward take the arguments
// of the Python twins in posemb.nn.
#include <posemb/posemb.h>
#include <torch/python.h>

#include <optional>
#include <sstream>
#include <string>

namespace py = pybind11;

namespace {

torch::Tensor or_undefined(const std::optional<torch::Tensor>& t) { return t ? *t : torch::Tensor(); }

// The Python twins' `offset`: an int, or a tensor of per-sequence offsets.
bool is_tensor(const py::object& o) { return THPVariable_Check(o.ptr()); }

template <typename Impl, typename Class>
void repr_from_pretty_print(Class& cls) {
  // torch's binding names the class only; show the module as C++ prints it.
  cls.attr("__repr__") = py::cpp_function(
      [](Impl& module) {
        std::ostringstream s;
        s << module;
        return s.str();
      },
      py::is_method(cls));
}

// forward(x, positions=None, *, offset=0, input_ids=None) of a position module.
template <typename Impl>
torch::Tensor position_forward(Impl& m, const torch::Tensor& x, const std::optional<torch::Tensor>& positions,
                               const py::object& offset, const std::optional<torch::Tensor>& input_ids) {
  if (input_ids) {
    TORCH_CHECK(!positions && py::isinstance<py::int_>(offset) && offset.cast<int64_t>() == 0,
                "input_ids makes the positions: give no positions or offset with it");
    return m.forward_ids(x, *input_ids);
  }
  if (is_tensor(offset)) {
    TORCH_CHECK(!positions, "give positions or offsets, not both");
    return m.forward_offsets(x, THPVariable_Unpack(offset.ptr()));
  }
  if (!py::isinstance<py::int_>(offset))
    throw py::type_error("offset must be an int or a tensor of per-sequence offsets, got " +
                         std::string(py::str(py::type::of(offset).attr("__name__"))));
  return m.forward(x, or_undefined(positions), offset.cast<int64_t>());
}

}  // namespace

PYBIND11_MODULE(_cpp, m) {
  m.doc() = "posemb's C++ modules (posemb::nn) bound to Python";
  using namespace posemb::nn;
  using torch::python::bind_module;

  {
    using Impl = SinusoidalPositionalEmbeddingImpl;
    auto cls = bind_module<Impl, /*force_enable=*/true>(m, "SinusoidalPositionalEmbedding");
    cls.def(py::init([](int64_t embedding_dim, std::string layout, std::string freqs, double base,
                        std::optional<int64_t> padding_idx, double scale, int64_t seq_dim) {
              return std::make_shared<Impl>(SinusoidalPositionalEmbeddingOptions(embedding_dim)
                                                .layout(std::move(layout)).freqs(std::move(freqs))
                                                .base(base).padding_idx(padding_idx).scale(scale)
                                                .seq_dim(seq_dim));
            }),
            py::arg("embedding_dim"), py::kw_only(), py::arg("layout") = "interleaved",
            py::arg("freqs") = "vaswani", py::arg("base") = 10000.0, py::arg("padding_idx") = py::none(),
            py::arg("scale") = 1.0, py::arg("seq_dim") = -2)
        .def("forward", &position_forward<Impl>, py::arg("x"), py::arg("positions") = py::none(),
             py::kw_only(), py::arg("offset") = 0, py::arg("input_ids") = py::none());
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = LearnedPositionalEmbeddingImpl;
    auto cls = bind_module<Impl, true>(m, "LearnedPositionalEmbedding");
    cls.def(py::init([](int64_t num_embeddings, int64_t embedding_dim, std::optional<int64_t> padding_idx,
                        int64_t seq_dim, bool sinusoidal_init, std::string layout, std::string freqs,
                        double base, double noise_std) {
              return std::make_shared<Impl>(LearnedPositionalEmbeddingOptions(num_embeddings, embedding_dim)
                                                .padding_idx(padding_idx).seq_dim(seq_dim)
                                                .sinusoidal_init(sinusoidal_init).layout(std::move(layout))
                                                .freqs(std::move(freqs)).base(base).noise_std(noise_std));
            }),
            py::arg("num_embeddings"), py::arg("embedding_dim"), py::kw_only(),
            py::arg("padding_idx") = py::none(), py::arg("seq_dim") = -2, py::arg("sinusoidal_init") = false,
            py::arg("layout") = "interleaved", py::arg("freqs") = "vaswani", py::arg("base") = 10000.0,
            py::arg("noise_std") = 0.0)
        .def("forward", &position_forward<Impl>, py::arg("x"), py::arg("positions") = py::none(),
             py::kw_only(), py::arg("offset") = 0, py::arg("input_ids") = py::none())
        .def("reset_parameters", &Impl::reset_parameters);
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = BertEmbeddingsImpl;
    auto cls = bind_module<Impl, true>(m, "BertEmbeddings");
    cls.def(py::init([](int64_t vocab_size, int64_t hidden_size, int64_t max_position_embeddings,
                        int64_t type_vocab_size, std::optional<int64_t> pad_token_id, double layer_norm_eps,
                        double hidden_dropout_prob, bool padding_aware_positions) {
              return std::make_shared<Impl>(BertEmbeddingsOptions(vocab_size, hidden_size)
                                                .max_position_embeddings(max_position_embeddings)
                                                .type_vocab_size(type_vocab_size).pad_token_id(pad_token_id)
                                                .layer_norm_eps(layer_norm_eps)
                                                .hidden_dropout_prob(hidden_dropout_prob)
                                                .padding_aware_positions(padding_aware_positions));
            }),
            py::arg("vocab_size"), py::arg("hidden_size"), py::arg("max_position_embeddings") = 512,
            py::arg("type_vocab_size") = 2, py::arg("pad_token_id") = 0, py::arg("layer_norm_eps") = 1e-12,
            py::arg("hidden_dropout_prob") = 0.1, py::arg("padding_aware_positions") = false)
        .def(
            "forward",
            [](Impl& m, const torch::Tensor& input_ids, const std::optional<torch::Tensor>& token_type_ids,
               const std::optional<torch::Tensor>& position_ids, int64_t cache_length) {
              return m.forward(input_ids, or_undefined(token_type_ids), or_undefined(position_ids),
                               cache_length);
            },
            py::arg("input_ids"), py::arg("token_type_ids") = py::none(), py::arg("position_ids") = py::none(),
            py::arg("cache_length") = 0);
    // state_dict() and load_state_dict() with Hugging Face's keys: torch.nn.Module
    // walks _parameters and _modules, and the children here are C++ modules
    // with no Python face, so the parameters are shown flat, by their full names.
    cls.def_property_readonly("_parameters", [](Impl& m) { return m.named_parameters(/*recurse=*/true); })
        .def_property_readonly("_modules", [](Impl&) {
          return torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>>();
        });
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = RotaryEmbeddingImpl;
    auto cls = bind_module<Impl, true>(m, "RotaryEmbedding");
    cls.def(py::init([](int64_t head_dim, double base, std::optional<int64_t> rotary_dim, double linear_factor,
                        std::optional<torch::Tensor> inv_freq, double attention_scaling, bool interleaved,
                        int64_t seq_dim, std::optional<std::vector<int64_t>> mrope_section, bool mrope_interleaved) {
              return std::make_shared<Impl>(RotaryEmbeddingOptions(head_dim)
                                                .base(base).rotary_dim(rotary_dim).linear_factor(linear_factor)
                                                .inv_freq(std::move(inv_freq))
                                                .attention_scaling(attention_scaling)
                                                .interleaved(interleaved).seq_dim(seq_dim)
                                                .mrope_section(std::move(mrope_section))
                                                .mrope_interleaved(mrope_interleaved));
            }),
            py::arg("head_dim"), py::kw_only(), py::arg("base") = 10000.0, py::arg("rotary_dim") = py::none(),
            py::arg("linear_factor") = 1.0, py::arg("inv_freq") = py::none(),
            py::arg("attention_scaling") = 1.0, py::arg("interleaved") = false, py::arg("seq_dim") = 1,
            py::arg("mrope_section") = py::none(), py::arg("mrope_interleaved") = false)
        .def(
            "forward",
            [](Impl& m, const torch::Tensor& q, const torch::Tensor& k,
               const std::optional<torch::Tensor>& positions, int64_t offset) {
              return m.forward(q, k, or_undefined(positions), offset);
            },
            py::arg("q"), py::arg("k"), py::arg("positions") = py::none(), py::kw_only(),
            py::arg("offset") = 0);
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = FourierPositionalEmbeddingImpl;
    auto cls = bind_module<Impl, true>(m, "FourierPositionalEmbedding");
    cls.def(py::init([](int64_t embedding_dim, std::optional<int64_t> num_frequencies, double base,
                        bool learn_frequencies, bool bias, int64_t seq_dim) {
              return std::make_shared<Impl>(FourierPositionalEmbeddingOptions(embedding_dim)
                                                .num_frequencies(num_frequencies).base(base)
                                                .learn_frequencies(learn_frequencies).bias(bias)
                                                .seq_dim(seq_dim));
            }),
            py::arg("embedding_dim"), py::arg("num_frequencies") = py::none(), py::kw_only(),
            py::arg("base") = 10000.0, py::arg("learn_frequencies") = true, py::arg("bias") = false,
            py::arg("seq_dim") = -2)
        .def(
            "forward",
            [](Impl& m, const torch::Tensor& x, const std::optional<torch::Tensor>& positions,
               const py::object& offset) {
              if (is_tensor(offset)) {
                TORCH_CHECK(!positions, "give positions or offsets, not both");
                return m.forward_offsets(x, THPVariable_Unpack(offset.ptr()));
              }
              if (!py::isinstance<py::int_>(offset))
                throw py::type_error("offset must be an int or a tensor of per-sequence offsets");
              return m.forward(x, or_undefined(positions), offset.cast<int64_t>());
            },
            py::arg("x"), py::arg("positions") = py::none(), py::kw_only(), py::arg("offset") = 0)
        .def("reset_parameters", &Impl::reset_parameters);
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = TimestepsImpl;
    auto cls = bind_module<Impl, true>(m, "Timesteps");
    cls.def(py::init([](int64_t num_channels, bool flip_sin_to_cos, double downscale_freq_shift, double scale,
                        double max_period) {
              return std::make_shared<Impl>(TimestepsOptions(num_channels)
                                                .flip_sin_to_cos(flip_sin_to_cos)
                                                .downscale_freq_shift(downscale_freq_shift)
                                                .scale(scale).max_period(max_period));
            }),
            py::arg("num_channels"), py::arg("flip_sin_to_cos"), py::arg("downscale_freq_shift"),
            py::arg("scale") = 1.0, py::arg("max_period") = 10000.0)
        .def("forward", &Impl::forward, py::arg("timesteps"));
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = SinCos2dPositionalEmbeddingImpl;
    auto cls = bind_module<Impl, true>(m, "SinCos2dPositionalEmbedding");
    cls.def(py::init([](int64_t embed_dim, std::optional<double> base_size, double interpolation_scale,
                        double base) {
              return std::make_shared<Impl>(SinCos2dPositionalEmbeddingOptions(embed_dim)
                                                .base_size(base_size)
                                                .interpolation_scale(interpolation_scale).base(base));
            }),
            py::arg("embed_dim"), py::arg("base_size") = py::none(), py::arg("interpolation_scale") = 1.0,
            py::arg("base") = 10000.0)
        .def("forward", &Impl::forward, py::arg("x"), py::arg("height"), py::arg("width"));
    repr_from_pretty_print<Impl>(cls);
  }
  {
    using Impl = SinCos3dPositionalEmbeddingImpl;
    auto cls = bind_module<Impl, true>(m, "SinCos3dPositionalEmbedding");
    cls.def(py::init([](int64_t embed_dim, double spatial_interpolation_scale, double temporal_interpolation_scale,
                        double base) {
              return std::make_shared<Impl>(SinCos3dPositionalEmbeddingOptions(embed_dim)
                                                .spatial_interpolation_scale(spatial_interpolation_scale)
                                                .temporal_interpolation_scale(temporal_interpolation_scale)
                                                .base(base));
            }),
            py::arg("embed_dim"), py::arg("spatial_interpolation_scale") = 1.0,
            py::arg("temporal_interpolation_scale") = 1.0, py::arg("base") = 10000.0)
        .def("forward", &Impl::forward, py::arg("x"), py::arg("frames"), py::arg("height"), py::arg("width"));
    repr_from_pretty_print<Impl>(cls);
  }
}
