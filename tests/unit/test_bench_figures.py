"""pfn15.bench: how the data benchmark's figures print (labelled, rounded). The
all-reduce and step benchmarks, which start MPI: tests/mpi/test_bench.py."""


def test_data_figures_print_labelled_and_rounded(capsys):
    import re
    from pfn15 import bench
    r = {'kind': 'data', 'root': '/data', 'workers': 2, 'images': 200, 'repeats': 3,
         'crop_size': 224, 'mean_image_size': [407, 398], 'ours_img_per_s': 612.3456789012345,
         'baseline_img_per_s': 401.98765432109876, 'ratio': 1.5232323232323232,
         'ours_full_decode_img_per_s': 455.1234567890123,
         'baseline_fused_norm_img_per_s': 450.9876543210987,
         'node_img_per_s': 1224.6913578024690, 'mean_abs_diff_vs_baseline': 0.031234567890123,
         'workers_needed': {'P100 (PFN, 125 img/s)': 1, 'V100 (Fujitsu, 845 img/s)': 2},
         'packed_img_per_s': 777.77777777777777}   # a figure the table does not name
    bench.print_data(r)
    out = capsys.readouterr().out
    assert not re.search(r'\d\.\d{4,}', out), out          # no long floats
    assert not re.search(r'\b[a-z]+_[a-z_]+\b', out), out  # no raw dict keys
    assert 'ours without scaled decode' in out and '455.1 img/s' in out
    assert '407 x 398' in out and 'packed (img/s)' in out and '778' in out
    assert 'decoding workers to feed one V100 (Fujitsu, 845 img/s)' in out
