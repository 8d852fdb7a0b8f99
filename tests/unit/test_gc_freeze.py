"""pfn15.train leaves start-up's objects out of full garbage collections."""
import gc

from pfn15 import train


def test_what_setup_built_is_left_out_of_full_collections():
    built = [[i] for i in range(5000)]   # stands for the model, data and trainer
    before = gc.get_freeze_count()
    train.freeze_setup_objects()
    try:
        assert gc.get_freeze_count() >= before + len(built)
        gc.collect()   # frozen objects are not walked, nor freed while referenced
        assert built[4999] == [4999]
    finally:
        gc.unfreeze()

