# The native CPU kernels (see native/). Each x86 instruction-set level is its own static
# library so that only its files get -mavx2 / -mavx512* flags; the addon itself is built
# for the baseline and picks a level at load time from the CPU's features.
{
  "variables": {
    "dsv3_x86": "<!(node -p \"['x64','ia32'].includes(process.arch) ? 1 : 0\")",
  },
  "target_defaults": {
    # -ffp-contract=off: the compiler never fuses a*b+c on its own, so the numbers are the
    # ones the source spells out (FMAs are explicit intrinsics), whatever the build path.
    "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fPIC"],
    "cflags_cc!": ["-std=gnu++17", "-std=gnu++20", "-std=c++20", "-O2", "-Os", "-O0"],
    "cflags!": ["-O2", "-Os", "-O0"],
    "xcode_settings": {
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "GCC_OPTIMIZATION_LEVEL": "3",
      "OTHER_CPLUSPLUSFLAGS": ["-fno-math-errno", "-ffp-contract=off"],
    },
    "msvs_settings": {"VCCLCompilerTool": {"Optimization": 2, "AdditionalOptions": ["/std:c++17"]}},
    "conditions": [["dsv3_x86==1", {"defines": ["DSV3_X86"]}]],
  },
  "targets": [
    {
      "target_name": "dsv3_native",
      "sources": [
        "native/binding.cc",
        "native/mapfile.cc",
        "native/ops.cc",
        "native/pool.cc",
        "native/quantize.cc",
        "native/sample.cc",
        "native/generic/kernels.cc",
      ],
      "conditions": [
        ["dsv3_x86==1", {"dependencies": ["dsv3_avx2", "dsv3_avx512"]}],
        ["OS=='linux'", {"libraries": ["-lpthread"]}],
      ],
    },
  ],
  "conditions": [
    ["dsv3_x86==1", {
      "targets": [
        {
          "target_name": "dsv3_avx2",
          "type": "static_library",
          "sources": ["native/arch/x86/avx2.cc"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["-mavx2", "-mfma", "-mf16c", "-fno-math-errno", "-ffp-contract=off"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["/arch:AVX2"]}},
        },
        {
          "target_name": "dsv3_avx512",
          "type": "static_library",
          "sources": ["native/arch/x86/avx512.cc"],
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c", "-fno-math-errno", "-ffp-contract=off"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["/arch:AVX512"]}},
        },
      ],
    }],
  ],
}
