"""docs/reliability.md, produced from the tests that check each case.

    python tests/reliability_table.py > docs/reliability.md

Each row names a fault or a bad input, what happens, and the test (or tests) that
check it; the script refuses to name a test that does not exist, and
``tests/test_reliability_doc.py`` fails when docs/reliability.md is not this
script's output.
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

# (section, fault or bad input, what happens, module, tests); a test named
# "other_module::test_name" lives in another module.
ROWS = [
    (
        "Interrupted training (`tests/test_faults.py`: the `train` command, SIGKILL)",
        "killed mid-epoch",
        "the same command resumes at the interrupted epoch: only that epoch's steps "
        "are lost",
        "test_faults",
        ["test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped"],
    ),
    (
        None,
        "killed between epochs",
        "the rerun resumes at the next epoch: nothing is lost",
        "test_faults",
        ["test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped"],
    ),
    (
        None,
        "killed after an epoch's checkpoint and log row, before its backup committed",
        "the rerun drops the uncommitted log row and trains that epoch again",
        "test_faults",
        ["test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped"],
    ),
    (
        None,
        "killed halfway through writing the best checkpoint, the backup or the "
        "final model",
        "the half-written file exists only under a `.partial` name, which nothing "
        "reads; the previous file is whole; the rerun deletes the partial file and "
        "resumes (after training, it only writes the results)",
        "test_faults",
        [
            "test_a_kill_mid_write_leaves_its_half_file_only_under_a_partial_name",
            "test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped",
        ],
    ),
    (
        None,
        "any of the kills above, then the same command",
        "the run ends with a loadable `model.keras`, one log row per epoch, "
        "`results.json` counting every epoch, no partial file and no backup left",
        "test_faults",
        ["test_the_finished_run_is_complete_loadable_and_clean"],
    ),
    (
        None,
        "a half-written log row, or a row of an epoch the backup did not commit",
        "dropped when the run resumes",
        "test_resume",
        ["test_a_resume_drops_log_rows_of_epochs_the_backup_did_not_commit"],
    ),
    (
        None,
        "partial files of a killed save",
        "deleted when training starts; never read",
        "test_resume",
        ["test_partial_files_of_a_killed_save_are_removed_and_never_read"],
    ),
    (
        "Reproducibility (`--seed N`: seeded, deterministic operations; CPU)",
        "the same seeded command twice",
        "bitwise-identical histories and weights",
        "test_faults",
        ["test_a_seeded_run_repeats_bit_for_bit"],
    ),
    (
        None,
        "a seeded run killed (three times, at different moments) and resumed",
        "ends bitwise identical to an uninterrupted run: weights and every logged "
        "value; the backup holds the random generators' states (augmentation, "
        "dropout, DropBlock), and the resumed `fit` replays the seeded shuffles the "
        "interrupted run had drawn",
        "test_faults",
        [
            "test_a_killed_and_resumed_run_ends_bit_for_bit_as_one_never_interrupted",
            "test_resume::test_a_resume_replays_the_shuffles_fit_had_drawn",
            "test_training::test_the_backup_holds_the_random_generators_states",
        ],
    ),
    (
        None,
        "early stopping in a resumed run",
        "carries on counting its patience from the epochs before the interruption, "
        "and restores the best weights even when they are from before it",
        "test_resume",
        ["test_early_stopping_carries_on_counting_after_a_resume"],
    ),
    (
        "Training that goes wrong",
        "a NaN or infinite loss",
        "training stops at that step with `TrainingDiverged`, naming the epoch and "
        "step; the backup keeps the last good epoch and `best.keras` the best one",
        "test_training",
        ["test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_state"],
    ),
    (
        None,
        "an output folder that cannot be written (no permission, read-only)",
        "exit status 1, naming the file and the reason",
        "test_cli",
        ["test_an_unwritable_run_folder_gets_a_clear_error"],
    ),
    (
        None,
        "a full disk in the middle of a run",
        "exit status 1 with the reason; the last committed backup is whole, no "
        "partial file is left, and the same command resumes",
        "test_cli",
        ["test_a_full_disk_mid_run_stops_cleanly_and_keeps_the_last_backup"],
    ),
    (
        None,
        "a run folder that belongs to another model or recipe",
        "refused, naming both settings (exit status 2); the folder is left as it was",
        "test_cli",
        ["test_a_run_folder_of_another_model_is_refused"],
    ),
    (
        None,
        "invalid command-line arguments",
        "a usage error naming the argument (exit status 2)",
        "test_cli",
        ["test_invalid_arguments_get_a_usage_error"],
    ),
    (
        None,
        "a `CIFAR_SMOKE` value that is not understood",
        "one error line naming the variable and the values it takes (exit status "
        "2); nothing is started, and `--help` still works",
        "test_cli",
        [
            "test_a_bad_cifar_smoke_gets_one_clear_error_line",
            "test_help_never_reads_the_environment",
        ],
    ),
    (
        None,
        "a distribution strategy the machine lacks",
        "exit status 1 saying what is missing",
        "test_cli",
        ["test_a_strategy_this_machine_lacks_is_refused"],
    ),
    (
        "Bad data and bad input",
        "no network, or a download with the wrong MD5",
        "the error gives the URL and where to place the file; a wrong download is "
        "set aside, never used",
        "test_data",
        [
            "test_no_network_gives_the_url_and_where_to_put_the_file",
            "test_a_download_with_the_wrong_md5_is_set_aside_not_kept",
        ],
    ),
    (
        None,
        "a truncated, damaged or foreign archive, or not an archive at all",
        "`CorruptArchiveError` or `NotCifar100Error` naming the file and what it holds",
        "test_data",
        [
            "test_a_truncated_archive_is_a_corrupt_archive_error",
            "test_damaged_compressed_bytes_are_a_corrupt_archive_error",
            "test_a_file_that_is_no_archive_is_a_corrupt_archive_error",
            "test_a_foreign_tar_lists_what_it_holds",
        ],
    ),
    (
        None,
        "a missing member, a pickle that would run code, wrong array sizes",
        "named in the error; unsafe pickles are refused, not loaded",
        "test_data",
        [
            "test_a_missing_member_is_named",
            "test_a_pickle_that_would_run_code_is_refused",
            "test_rows_of_the_wrong_size_are_reported",
        ],
    ),
    (
        None,
        "an unreadable image: not an image, empty, damaged, truncated, missing",
        "`ImageError` naming the file; `predict` classifies the other images and "
        "exits with status 1",
        "test_inference",
        [
            "test_a_file_that_is_no_image_is_named_in_a_clear_error",
            "test_a_truncated_jpeg_is_called_damaged",
            "test_a_missing_file_and_a_folder_are_named",
        ],
    ),
    (
        None,
        "images of the wrong shape or dtype into a model",
        "`ValueError` saying what the models take and how to convert (a batch axis, "
        "x 255, uint8)",
        "test_inference",
        ["test_images_of_the_wrong_shape_or_dtype_are_refused_with_the_fix"],
    ),
    (
        None,
        "invalid DropBlock, augmentation or model arguments",
        "`ValueError` naming the argument and what is allowed",
        "test_dropblock",
        [
            "test_invalid_arguments_name_the_argument_and_what_is_allowed",
            "test_augment::test_the_layer_rejects_bad_arguments_naming_them",
            "test_models::test_invalid_model_sizes_are_rejected_clearly",
        ],
    ),
]


def table() -> str:
    """The Markdown of docs/reliability.md."""
    lines = [
        "# Reliability: the faults tested and what happens",
        "",
        "Produced by `python tests/reliability_table.py > docs/reliability.md` from "
        "the tests",
        "that check each row; `make test` fails when this page and the tests differ.",
    ]
    for section, fault, outcome, module, tests in ROWS:
        where = [name.split("::") if "::" in name else (module, name) for name in tests]
        for test_module, name in where:
            if not hasattr(importlib.import_module(test_module), name):
                raise SystemExit(f"tests/{test_module}.py has no {name}")
        if section is not None:
            lines += ["", f"## {section}", "", "| case | what happens | checked by |"]
            lines.append("|---|---|---|")
        checked = "<br>".join(f"`tests/{m}.py::{name}`" for m, name in where)
        lines.append(f"| {fault} | {outcome} | {checked} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(table())
