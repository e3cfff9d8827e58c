# The one native target: the process-wide feature cache (native/cache.cc) behind a thin N-API
# binding (native/binding.cc). Build: npx node-gyp rebuild -> build/Release/scoreline_native.node
{
  "targets": [
    {
      "target_name": "scoreline_native",
      "sources": ["native/cache.cc", "native/binding.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_ADDON_API_DISABLE_CPP_EXCEPTIONS"
      ],
      "cflags!": ["-O2", "-Os"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"],
      "cflags": ["-O3", "-fno-exceptions", "-fvisibility=hidden", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fno-exceptions"],
      "xcode_settings": {
        "GCC_OPTIMIZATION_LEVEL": "3",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "GCC_ENABLE_CPP_EXCEPTIONS": "NO",
        "OTHER_CFLAGS": ["-fvisibility=hidden"]
      },
      "msvs_settings": {
        "VCCLCompilerTool": { "ExceptionHandling": 0, "AdditionalOptions": ["/std:c++17", "/O2"] }
      }
    }
  ]
}
