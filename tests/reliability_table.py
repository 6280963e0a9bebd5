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
        "Interrupted training (`tests/test_faults.py`: the `train` command killed with "
        "SIGKILL or stopped with SIGTERM)",
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
        "killed in the first epoch: mid-epoch, halfway through its backup, or after "
        "its checkpoint and log row but before its backup committed",
        "never reported finished: no epoch was committed, so the rerun starts "
        "again and trains every epoch asked for",
        "test_faults",
        [
            "test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped",
            "test_resume::test_a_run_is_finished_only_when_its_record_says_so",
        ],
    ),
    (
        None,
        "stopped with SIGTERM (a stopping Colab session, a preempted machine) or "
        "Ctrl-C",
        "one line, `error: interrupted. The same command resumes ...`, exit status "
        "130; the last committed epoch is kept and the rerun resumes after it",
        "test_faults",
        ["test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped"],
    ),
    (
        None,
        "killed after training ended: halfway through writing `model.keras`, "
        "between the record that training ended and the backup's deletion, or "
        "between `results.json` and `finished.json`",
        "the rerun trains nothing, writes the results again and then "
        "`finished.json`; the stale backup is deleted",
        "test_faults",
        ["test_each_kill_ends_the_process_and_each_rerun_resumes_where_it_stopped"],
    ),
    (
        None,
        "SIGTERM or Ctrl-C while the command starts up (importing TensorFlow, "
        "loading the data)",
        "one line, exit status 130; nothing recorded",
        "test_run_folder",
        ["test_sigterm_while_starting_up_is_one_line"],
    ),
    (
        None,
        "SIGTERM while blocked in native code that never returns to Python (a "
        "multi-worker cluster waiting for a missing peer)",
        "stopped outright 30 s later (2 s in the test), with one line and exit "
        "status 130; files are whole, and `train` resumes",
        "test_run_folder",
        ["test_a_command_stuck_in_native_code_still_stops_on_sigterm"],
    ),
    (
        None,
        "any of the kills above, then the same command",
        "the run ends with a loadable `model.keras`, one log row per epoch, "
        "`results.json` counting every epoch, `trained.json` and `finished.json`, "
        "no partial file and no backup left",
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
        "Damaged and inconsistent run folders (`tests/test_run_folder.py`: the "
        "`train`, `evaluate` and `predict` commands)",
        "a finished run folder with `run.json`, `results.json`, `trained.json` or "
        "`finished.json` truncated, empty, `null` or of another kind, `results.json` "
        "without its scores, `run.json` naming an unknown model or deleted, "
        "`model.keras` truncated, `curves.png` or `best.keras` deleted",
        "exit status 1, one line naming the file, what is wrong and the fix (which "
        "is only to write the results again when `best.keras`, `run.json` and the "
        "record that training ended are whole); never the old scores with status 0",
        "test_run_folder",
        ["test_a_damaged_finished_run_is_named_never_reported"],
    ),
    (
        None,
        "`model.keras` and `best.keras` deleted, `results.json` kept",
        "exit status 1: `finished.json` records a finished run but `model.keras` is "
        "missing, so its results cannot be trusted",
        "test_run_folder",
        ["test_a_damaged_finished_run_is_named_never_reported"],
    ),
    (
        None,
        "an interrupted run with a damaged log row or header, a truncated or empty "
        "backup record, its weights file missing, truncated or outside the backup "
        "folder, random generators' states of another kind, a backup naming more "
        "epochs than the log holds (or than the run asks for), a truncated "
        "`best.keras`",
        "exit status 1, one line naming the file and what is wrong, and how to start "
        "again (another `--out`); nothing is reported finished",
        "test_run_folder",
        [
            "test_a_damaged_interrupted_run_is_named_with_how_to_go_on",
            "test_resume::test_a_damaged_backup_is_named_with_how_to_start_again",
            "test_resume::test_a_backup_that_commits_more_epochs_than_the_log_holds_is_refused",
            "test_resume::test_a_backup_that_commits_more_epochs_than_asked_is_refused",
            "test_resume::test_a_damaged_log_row_is_named",
        ],
    ),
    (
        None,
        "a half-written last log row, cut inside a multi-byte character",
        "dropped when the run resumes; the run ends with every epoch",
        "test_run_folder",
        ["test_a_half_written_log_row_with_a_broken_character_is_dropped_on_resume"],
    ),
    (
        None,
        "`predict` or `export` given a run folder whose run has not finished",
        "exit status 1: its `model.keras`, if any, is not the run's result",
        "test_run_folder",
        ["test_predict_refuses_a_run_folder_that_has_not_finished"],
    ),
    (
        None,
        "`backup/` deleted in the middle of a run",
        "no committed epoch is left: the rerun says so, starts again and trains "
        "every epoch asked for",
        "test_run_folder",
        ["test_a_run_whose_backup_was_deleted_starts_again_and_trains_every_epoch"],
    ),
    (
        None,
        "a truncated `model.keras` or a damaged `classes.json` of a finished run",
        "`evaluate`, `predict` and `train` exit with status 1, one line naming the "
        "file and the fix that works (delete `finished.json`: the same `train` "
        "command writes the outcome again from `best.keras`)",
        "test_run_folder",
        ["test_evaluate_and_predict_name_a_damaged_model"],
    ),
    (
        None,
        "`evaluate` on a run that has not finished",
        "exit status 2: no `finished.json`, and how to finish the run",
        "test_run_folder",
        ["test_evaluate_refuses_a_run_that_has_not_finished"],
    ),
    (
        "Starts that fail, and two processes at once",
        "a start that fails on its data (a bad path), seed or strategy",
        "nothing is recorded: `run.json` is written only once the settings, data, "
        "seed and strategy are checked, so the corrected command can use the folder",
        "test_run_folder",
        [
            "test_a_start_that_fails_on_its_data_records_nothing",
            "test_cli::test_the_old_model_name_still_works_with_a_note",
            "test_cli::test_a_strategy_this_machine_lacks_is_refused",
            "test_run_settings_refuse_values_of_the_wrong_kind",
        ],
    ),
    (
        None,
        "the same run asked for with a default spelled out or left out (`--smoke` "
        "alone, `--smoke --epochs 2`), or a data path relative or absolute",
        "the same run: settings are compared once resolved",
        "test_run_folder",
        ["test_the_same_run_asked_for_with_its_defaults_spelled_out_or_not"],
    ),
    (
        None,
        "a folder whose run never committed an epoch, with other settings",
        "nothing is lost: it says so and starts again with the new settings; a "
        "relative `--data` path is recorded absolute, so `evaluate` from another "
        "folder reads the same archive",
        "test_run_folder",
        ["test_a_folder_whose_run_never_committed_an_epoch_takes_other_settings"],
    ),
    (
        None,
        "`--out` that is a file, under a file, under `/proc`, or too long a name",
        "one line (exit status 2 for a file, 1 otherwise) naming the path and the "
        "reason; an existing file is left untouched",
        "test_run_folder",
        [
            "test_an_out_that_is_a_file_is_a_usage_error",
            "test_an_out_that_cannot_be_a_folder_is_one_line",
        ],
    ),
    (
        None,
        "an empty `--out`, or a folder that holds other files and no run (`--out .` "
        "in a home folder)",
        "a usage error (exit status 2); nothing in the folder is touched (partial "
        "files are deleted only where the package writes them)",
        "test_run_folder",
        ["test_an_empty_out_or_a_folder_of_other_files_is_refused"],
    ),
    (
        None,
        "`KERAS_BACKEND` naming another backend",
        "a usage error (exit status 2) saying the package runs on TensorFlow",
        "test_run_folder",
        ["test_another_keras_backend_is_one_line"],
    ),
    (
        None,
        "`KERAS_HOME` (the data cache) that is a file or cannot be written",
        "`DatasetError` (exit status 1) naming the folder and how to set it",
        "test_data",
        [
            "test_a_cache_that_is_a_file_is_named_with_the_fix",
            "test_a_cache_that_cannot_be_written_is_named_with_the_fix",
        ],
    ),
    (
        None,
        "a bad `CIFAR_SMOKE` with each subcommand",
        "`train`, which reads it, stops with one line (exit status 2); `evaluate`, "
        "`predict` and `export` do not read it and work",
        "test_run_folder",
        ["test_a_bad_cifar_smoke_troubles_only_the_command_that_reads_it"],
    ),
    (
        None,
        "two `train` processes on one run folder",
        "the second is refused at once (exit status 1), naming the process that "
        "holds the folder's lock; a lock left by a dead process (SIGKILL) never "
        "blocks, also where the file system cannot lock",
        "test_run_folder",
        [
            "test_a_second_train_on_a_folder_in_use_is_refused_naming_the_process",
            "test_where_flock_is_missing_a_live_process_id_still_locks",
        ],
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
        "an archive member declaring gigabytes (a small gzip of zeros), or an "
        "oversized file in an extracted folder",
        "refused from its header, before a byte is read: `NotCifar100Error` naming "
        "the member and its size (the cap, 512 MiB, is over three times the largest "
        "official member)",
        "test_data",
        [
            "test_a_member_that_declares_gigabytes_is_refused_before_it_is_read",
            "test_an_oversized_file_of_an_extracted_folder_is_refused",
        ],
    ),
    (
        None,
        "labels that are not whole numbers (floats would be truncated), names that "
        "are not text, repeated class names, arrays of the wrong kind",
        "`NotCifar100Error` naming the member and the key",
        "test_data",
        ["test_labels_and_names_of_the_wrong_type_are_not_cifar"],
    ),
    (
        None,
        "an archive with too few images for a subset or a split",
        "`TooFewImagesError` (a `DatasetError`) naming the data and the class; "
        "`train --smoke` exits with one line, status 1",
        "test_data",
        [
            "test_too_few_images_for_a_subset_is_a_dataset_error",
            "test_run_folder::test_too_few_images_for_the_smoke_subset_is_one_line",
        ],
    ),
    (
        None,
        "a `classes.json` that is truncated, empty, one string, numbers, or repeats "
        "a name",
        "`ModelError` naming the file; never classes all named after one letter",
        "test_inference",
        ["test_a_damaged_classes_json_is_named"],
    ),
    (
        None,
        "a truncated `.keras` file, a text file named `.keras`, a garbage "
        "`saved_model.pb`",
        '`ModelError` naming the file (not Keras\' misleading "File not found")',
        "test_inference",
        [
            "test_a_damaged_or_foreign_keras_file_is_named",
            "test_a_garbage_saved_model_is_named",
        ],
    ),
    (
        None,
        "an image declaring too many pixels (a 420 KB PNG of 12000 x 12000), a FIFO "
        "given as an image",
        "`ImageError` before any pixel is decoded (over 64 megapixels, or in "
        "Pillow's warning band); a FIFO is never opened, so nothing hangs",
        "test_inference",
        [
            "test_an_image_declaring_too_many_pixels_is_refused_unread",
            "test_a_fifo_is_refused_without_opening_it",
        ],
    ),
    (
        None,
        "a 32-bit integer image with values beyond 16 bits",
        "clipped to white (and negatives to black), not wrapped around",
        "test_inference",
        ["test_thirty_two_bit_integer_grey_is_clipped_not_wrapped"],
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
