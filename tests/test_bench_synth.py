from lowbit.hw.selftest import Counter
from lowbit.sw.bench import synth_core


def test_synth_core_reports_core_logic_separately_from_the_wrapper(tmp_path):
    row = synth_core(lambda: Counter(16), "ice40-up5k", tmp_path)
    # en (1 bit) in; count (16) + led (1) out: 1 shift FF + ceil(16/3) XOR LUTs + 1 output FF
    assert row["wrapper_logic_estimate"] == 1 + 6 + 1
    assert row["logic_total"] == row["logic"] + row["wrapper_logic_estimate"]
    assert 16 <= row["logic"] <= 40 and row["fmax_mhz"] > 12 and row["dsp"] == 0


def test_synth_rows_select_by_name_and_a_4bit_array_stays_within_60_lcs_per_mac(tmp_path):
    from lowbit.sw.bench import synth_rows
    rows = synth_rows(tmp_path, only="array-4x4-4bit")
    assert [r["name"] for r in rows] == ["array-4x4-4bit", "array-4x4-4bit-systolic"]
    for r in rows:
        assert r["fits"] and r["device"] == "ice40-up5k" and r["dsp"] == 0
        assert r["lcs_per_mac"] <= 60, r        # the #4 goal for a 4-bit MAC on UP5K
        assert r["fmax_mhz"] > 12
