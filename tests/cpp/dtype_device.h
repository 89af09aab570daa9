// The parameter every op test runs over: dtype x device, CUDA cases skipped
// cleanly on a machine without a GPU.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>
#include <string>
#include <tuple>

using DtypeDevice = std::tuple<torch::Dtype, torch::DeviceType>;

class DtypeDeviceTest : public ::testing::TestWithParam<DtypeDevice> {
 protected:
  void SetUp() override {
    if (device() == torch::kCUDA && !torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
  torch::Dtype dtype() const { return std::get<0>(GetParam()); }
  torch::DeviceType device() const { return std::get<1>(GetParam()); }
  torch::TensorOptions options() const { return torch::dtype(dtype()).device(device()); }
};

inline std::string dtype_device_name(const ::testing::TestParamInfo<DtypeDevice>& info) {
  std::ostringstream name;
  name << c10::toString(std::get<0>(info.param)) << "_"
       << (std::get<1>(info.param) == torch::kCPU ? "CPU" : "CUDA");
  return name.str();
}

/// Runs the TEST_Ps of `suite` (a DtypeDeviceTest) on every dtype and device.
#define POSEMB_TEST_ALL_DTYPES_AND_DEVICES(suite)                                             \
  INSTANTIATE_TEST_SUITE_P(                                                                   \
      DtypesAndDevices, suite,                                                                \
      ::testing::Combine(::testing::Values(torch::kFloat32, torch::kFloat64, torch::kFloat16, \
                                           torch::kBFloat16),                                 \
                         ::testing::Values(torch::kCPU, torch::kCUDA)),                       \
      dtype_device_name)
