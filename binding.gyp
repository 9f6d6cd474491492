{
  "variables": {
    "revpatch_nbdkit%": "<!(node native/nbdkit/nbdkit-flags.js has)"
  },
  "targets": [
    {
      "target_name": "revpatch",
      "sources": [
        "<!@(node -p \"require('fs').readdirSync('native/engine').filter(f => f.endsWith('.cc')).map(f => 'native/engine/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/engine/generator').filter(f => f.endsWith('.cc')).map(f => 'native/engine/generator/' + f).join(' ')\")",
        "<!@(node -p \"require('fs').readdirSync('native/addon').filter(f => f.endsWith('.cc')).map(f => 'native/addon/' + f).join(' ')\")"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native/engine",
        "native/engine/generator"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "11.0",
        "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
        "OTHER_CFLAGS": ["-O2"]
      },
      "conditions": [
        ["OS=='mac'", {
          "include_dirs": ["<!(node native/brotli-flags.js include)", "<!(node native/zstd-flags.js include)"],
          "libraries": ["<!@(node native/brotli-flags.js libs)", "<!@(node native/zstd-flags.js libs)"]
        }],
        ["OS=='linux'", {
          "libraries": ["<!@(node native/brotli-flags.js libs)", "<!@(node native/zstd-flags.js libs)"]
        }]
      ]
    }
  ],
  "conditions": [
    ["revpatch_nbdkit==1", {
      "targets": [
        {
          "target_name": "revpatch_nbdkit",
          "type": "loadable_module",
          "product_prefix": "",
          "target_conditions": [
            ["_type=='loadable_module'", { "product_extension": "so" }]
          ],
          "sources": [
            "<!@(node -p \"require('fs').readdirSync('native/engine').filter(f => f.endsWith('.cc')).map(f => 'native/engine/' + f).join(' ')\")",
            "<!@(node -p \"require('fs').readdirSync('native/nbdkit').filter(f => f.endsWith('.cc')).map(f => 'native/nbdkit/' + f).join(' ')\")"
          ],
          "include_dirs": [
            "native/engine",
            "<!(node native/nbdkit/nbdkit-flags.js include)"
          ],
          "cflags!": ["-fno-exceptions"],
          "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
          "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden"],
          "xcode_settings": {
            "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
            "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
            "MACOSX_DEPLOYMENT_TARGET": "11.0",
            "GCC_SYMBOLS_PRIVATE_EXTERN": "YES",
            "OTHER_CFLAGS": ["-O2"],
            "OTHER_LDFLAGS": ["-undefined", "dynamic_lookup"]
          },
          "conditions": [
            ["OS=='mac'", {
              "include_dirs": ["<!(node native/brotli-flags.js include)", "<!(node native/zstd-flags.js include)"],
              "libraries": ["<!@(node native/brotli-flags.js libs)", "<!@(node native/zstd-flags.js libs)"]
            }],
            ["OS=='linux'", {
              "libraries": ["<!@(node native/brotli-flags.js libs)", "<!@(node native/zstd-flags.js libs)"]
            }]
          ]
        }
      ]
    }]
  ]
}
