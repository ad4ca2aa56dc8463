#!/usr/bin/env python3
"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`, same arguments), with
the model's weights in llama.cpp's ordinary CPU buffers rather than its "extra" buffer types.

On a CPU with AMX, llama.cpp built with GGML_NATIVE=ON (scripts/install-llama-cpp.sh) repacks the
Q4_1 weights for its AMX matmul, and in llama-cpp-python 0.3.36 that matmul segfaults as soon as a
batch holds more than a few tokens (any real prompt); the server dies on its first request. The
server has no option for it, so this wrapper turns `use_extra_bufts` off in the model parameters
llama-cpp-python starts from. For this GGUF that changes nothing else: llama.cpp has no other
repacked layout for Q4_1, so the weights are used in place with its AVX-512/AVX2 kernels.
--extra-buffers keeps llama.cpp's default (for a build or CPU where the AMX path works).

Run: .venv/bin/python scripts/llama_server.py [--extra-buffers] --model GGUF [server arguments]
"""
import runpy
import sys

import llama_cpp.llama_cpp as llama_api

if "--extra-buffers" in sys.argv:
    sys.argv.remove("--extra-buffers")
else:
    default_model_params = llama_api.llama_model_default_params

    def model_params_without_extra_buffers():
        params = default_model_params()
        params.use_extra_bufts = False
        return params

    # llama_cpp.Llama reads its model parameters from this function at load time.
    llama_api.llama_model_default_params = model_params_without_extra_buffers

runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
