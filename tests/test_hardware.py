"""The CPU facts a default depends on (core/hardware.py)."""
from core.hardware import cpu_flags, has_int8_dot_products


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma\n\n"
                    "processor\t: 1\nflags\t\t: fpu sse2 avx2 fma\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_int8_dot_products_need_vnni():
    assert not has_int8_dot_products(frozenset({"avx2", "fma", "avx512f"}))
    assert has_int8_dot_products(frozenset({"avx2", "avx512_vnni"}))
    assert has_int8_dot_products(frozenset({"avx2", "avx_vnni"}))

