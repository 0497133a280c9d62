"""Make broken copies of a GGUF file, to prove that validation catches them.

Run with the gguf toolchain's interpreter:
    python tamper_gguf.py KIND SOURCE DEST
KIND is swap-rope, drop-rope, drop-eos-key, wrong-template or corrupt-tensor.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
from hubquant_worker.gguf import _copy_metadata, gguf


def rewrite(source: str, dest: str, *, drop_tensors=(), drop_keys=(), set_strings=None) -> None:
    reader = gguf.GGUFReader(source)
    arch = gguf.GGUFReader(source).fields["general.architecture"]
    arch_name = bytes(arch.parts[arch.data[0]]).decode()
    writer = gguf.GGUFWriter(dest, arch_name, use_temp_file=False)
    for key in drop_keys:
        reader.fields.pop(key, None)
    for key, value in (set_strings or {}).items():
        reader.fields.pop(key, None)
    _copy_metadata(reader, writer)
    for key, value in (set_strings or {}).items():
        writer.add_string(key, value)
    tensors = [t for t in reader.tensors if t.name not in drop_tensors]
    for tensor in tensors:
        data = np.asarray(tensor.data)
        writer.add_tensor_info(tensor.name, list(data.shape), data.dtype, int(tensor.n_bytes), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in tensors:
        writer.write_tensor_data(np.asarray(tensor.data))
    writer.close()


def in_place(dest: str, edit) -> None:
    reader = gguf.GGUFReader(dest, "r+")
    edit({t.name: t for t in reader.tensors})
    reader.data.flush()


def main() -> None:
    kind, source, dest = sys.argv[1:4]
    if kind == "swap-rope":
        shutil.copy(source, dest)

        def swap(tensors):
            long, short = tensors["rope_factors_long.weight"].data, tensors["rope_factors_short.weight"].data
            saved = np.array(long)
            long[:] = short
            short[:] = saved

        in_place(dest, swap)
    elif kind == "drop-rope":
        rewrite(source, dest, drop_tensors=("rope_factors_long.weight", "rope_factors_short.weight"))
    elif kind == "drop-eos-key":
        rewrite(source, dest, drop_keys=("tokenizer.ggml.eom_token_id", "tokenizer.ggml.eot_token_id"))
    elif kind == "wrong-template":
        rewrite(source, dest, set_strings={"tokenizer.chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"})
    elif kind == "corrupt-tensor":
        shutil.copy(source, dest)

        def corrupt(tensors):
            data = tensors["blk.0.ffn_down.weight"].data
            data.view(np.uint8)[:] = 0x7F

        in_place(dest, corrupt)
    else:
        raise SystemExit(f"unknown kind {kind}")


if __name__ == "__main__":
    main()
