"""Break the code on purpose, one mutation at a time, and check that the tests aimed at it fail.

Each mutation replaces one exact piece of source in a copy of the package (the working tree is
never touched) and runs the tests named for it against that copy. A mutation the tests do not
catch is a test that cannot fail; the script exits 1 if there is one.

    python scripts/mutation_check.py            # every mutation
    python scripts/mutation_check.py dr nnpu    # the named ones
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    original: str
    mutated: str
    tests: tuple[str, ...]


MUTATIONS = (
    Mutation(
        "noise-correction-rates-swapped",
        "pyro_irm/estimators/losses.py",
        "corrected_one = (1.0 - eps0) * loss_one - eps1 * loss_zero",
        "corrected_one = (1.0 - eps1) * loss_one - eps0 * loss_zero",
        ("tests/estimators/test_losses.py",),
    ),
    Mutation(
        "pu-negative-part-sign",
        "pyro_irm/estimators/losses.py",
        "return class_prior * mean_positive_one, mean_unlabelled_zero - class_prior * mean_positive_zero",
        "return class_prior * mean_positive_one, mean_unlabelled_zero + class_prior * mean_positive_zero",
        ("tests/estimators/test_losses.py",),
    ),
    Mutation(
        "ubpr-partner-unweighted",
        "pyro_irm/estimators/losses.py",
        "(1.0 - partner_actions.to(logits.dtype) / partner_propensity)",
        "1.0",
        ("tests/estimators/test_losses.py", "tests/estimators/test_wiring.py"),
    ),
    Mutation(
        "channel-polarity-ignored",
        "pyro_irm/models/channel.py",
        "logits = self.intercept + F.softplus(self.raw_effect) * _signed(preference, self.spec)",
        "logits = self.intercept + F.softplus(self.raw_effect) * preference",
        ("tests/models/test_channels.py",),
    ),
    Mutation(
        "unseen-users-get-a-neighbour",
        "pyro_irm/models/implicit.py",
        "return padded[torch.where(unknown, torch.full_like(users, self.num_users), users)]",
        "return padded[users.clamp(0, self.num_users - 1)]",
        ("tests/models/test_channels.py", "tests/inference/test_channels_fit.py"),
    ),
    Mutation(
        "label-noise-ignored",
        "pyro_irm/models/channel.py",
        "return dist.Bernoulli(probs=preference * (1 - noise) + (1 - preference) * noise)",
        "return dist.Bernoulli(probs=preference)",
        ("tests/models/test_channels.py", "tests/inference/test_channels_fit.py"),
    ),
    Mutation(
        "nnpu-no-correction",
        "pyro_irm/estimators/pu.py",
        "if negative < -batch.config.nnpu_beta:",
        "if False and negative < -batch.config.nnpu_beta:",
        (
            "tests/estimators/test_wiring.py::test_nnpu_correction_keeps_a_flexible_network_from_overfitting_where_upu_does",
        ),
    ),
    Mutation(
        "dr-is-ips",
        "pyro_irm/estimators/weighting.py",
        "return doubly_robust_loss(per_row, imputed, batch.observed, batch.propensity)",
        "return observed_ips_loss(per_row, batch.observed, batch.propensity)",
        (
            "tests/estimators/test_wiring.py::test_dr_is_unbiased_when_either_the_propensity_or_the_imputation_is_right",
        ),
    ),
    Mutation(
        "implicit-ips-unweighted",
        "pyro_irm/estimators/weighting.py",
        "        else:\n            terms = implicit_ips_loss(batch.logits, batch.actions, batch.propensity)",
        "        else:\n"
        "            terms = implicit_ips_loss(batch.logits, batch.actions, 1 + 0 * batch.propensity)",
        ("tests/estimators/test_wiring.py",),
    ),
    Mutation(
        "causalrm-no-flip-correction",
        "pyro_irm/estimators/noise.py",
        "per_row = noise_corrected_loss(batch.logits, batch.actions, eps1, eps0)",
        "per_row = noise_corrected_loss(batch.logits, batch.actions, 0.0, 0.0)",
        ("tests/estimators/test_wiring.py::test_causalrm_corrects_flips_and_weights_by_the_propensity",),
    ),
    Mutation(
        "score-constant",
        "pyro_irm/models/reward_model.py",
        "return self._batched(self.model.reward_logits, [embeddings, context], batch_size)",
        "return torch.zeros(embeddings.shape[0])",
        ("tests/analysis/test_posterior.py::test_fitted_groups_beat_the_prior_and_are_calibrated",),
    ),
    Mutation(
        "reward-ignores-text",
        "pyro_irm/models/base.py",
        "return full_precision(self.reward_net(embeddings).squeeze(-1))",
        "return full_precision(self.reward_net(embeddings * 0).squeeze(-1))",
        ("tests/analysis/test_posterior.py::test_fitted_groups_beat_the_prior_and_are_calibrated",),
    ),
    Mutation(
        "guide-baseline-frozen",
        "pyro_irm/models/guides.py",
        "return self.net(inputs).squeeze(-1)",
        "return self.net(inputs).squeeze(-1).detach()",
        ("tests/inference/test_fit.py::test_score_function_guide_trains_model_guide_and_baseline",),
    ),
    Mutation(
        "csv-invalid-text-kept",
        "pyro_irm/data/readers.py",
        "if problem := _invalid_field(record):",
        "if False and (problem := _invalid_field(record)):",
        ("tests/test_generated_logs.py::test_read_log_succeeds_skips_or_names_the_row",),
    ),
    Mutation(
        "checkpoint-ignores-data",
        "pyro_irm/inference/svi.py",
        '"data": data.fingerprint(),',
        '"data": None,',
        ("tests/test_reliability.py::test_a_checkpoint_of_another_fit_or_a_damaged_one_is_refused",),
    ),
    Mutation(
        "cache-never-verified",
        "pyro_irm/encoders/embed.py",
        "if cache is not None and len(corrupt := cache.verify(positions[positions >= 0])):",
        "if False:",
        ("tests/encoders/test_encoders.py::test_bytes_overwritten_in_the_cache_are_found_and_encoded_again",),
    ),
    Mutation(
        "best-of-n-lowest",
        "pyro_irm/rerank.py",
        "order = np.lexsort((np.arange(len(rewards)), -rewards, inverse))",
        "order = np.lexsort((np.arange(len(rewards)), rewards, inverse))",
        ("tests/test_rlhf.py::test_best_of_n_picks_the_highest_reward_and_scores_the_picks_by_hand",),
    ),
    Mutation(
        "pairs-ties-count-right",
        "pyro_irm/analysis/metrics.py",
        '"accuracy": float(np.mean(chosen > rejected)),',
        '"accuracy": float(np.mean(chosen >= rejected)),',
        ("tests/data/test_formats.py::test_pair_metrics_by_hand",),
    ),
    Mutation(
        "network-head-curvature-sign",
        "pyro_irm/inference/bayesian_head.py",
        "weight = (-curve).clamp_min(0)",
        "weight = curve.abs()",
        (
            "tests/inference/test_bayesian_head.py::test_network_posterior_factors_are_the_curvature_of_the_models_likelihood",
        ),
    ),
    Mutation(
        "network-head-last-layer-only",
        "pyro_irm/models/head_posterior.py",
        "        for factors, (gradients, inputs) in zip(self.layers, projected, strict=True):\n"
        "            inverse = factors",
        "        for factors, (gradients, inputs) in zip(self.layers[-1:], projected[-1:], strict=True):\n"
        "            inverse = factors",
        ("tests/inference/test_bayesian_head.py::test_network_posterior_covers_the_true_preference_logit",),
    ),
    Mutation(
        "import-circle",
        "pyro_irm/models/head_posterior.py",
        "@dataclass\nclass HeadPosterior:",
        "def _draw(groups):\n    from pyro_irm.analysis.convert import from_groups\n\n"
        "    return from_groups(groups)\n\n\n@dataclass\nclass HeadPosterior:",
        (
            "tests/test_package.py::test_no_module_imports_itself_through_a_circle_and_each_imports_alone_in_dependency_order",
        ),
    ),
    Mutation(
        "cli-help-hand-written",
        "pyro_irm/cli/options.py",
        'help_text = field.metadata.get("help", "")',
        'help_text = "a setting"',
        ("tests/test_cli.py::test_each_option_is_a_configuration_field_with_the_field_s_own_help",),
    ),
    Mutation(
        "mapped-rows-offset-ignored",
        "pyro_irm/data/paging.py",
        "RowFile(array.filename, first_row, array.shape, array.dtype)",
        "RowFile(array.filename, array.offset, array.shape, array.dtype)",
        ("tests/inference/test_fit.py::test_memory_mapped_embeddings_fit_exactly_as_in_memory_ones",),
    ),
    Mutation(
        "heldout-chunks-reuse-actions",
        "pyro_irm/inference/objectives.py",
        "        batch = rows.take(chunk, model.device)",
        "        batch = rows.take(index[: len(chunk)], model.device)",
        ("tests/inference/test_fit.py::test_the_held_out_elbo_is_the_same_in_chunks_as_in_one_pass",),
    ),
    Mutation(
        "lora-adapters-untrained",
        "pyro_irm/inference/finetune.py",
        "    return [p for p in encoder.model.parameters() if p.requires_grad]",
        "    return []",
        ("tests/inference/test_finetune.py::test_fine_tuning_beats_the_frozen_encoder_on_held_out_elbo",),
    ),
    Mutation(
        "processes-share-one-half",
        "pyro_irm/inference/svi.py",
        "return batch[fabric.global_rank :: fabric.world_size]",
        "return batch[: len(batch) // fabric.world_size]",
        ("tests/inference/test_distributed.py::test_two_processes_fit_what_one_does",),
    ),
    Mutation(
        "diverged-fit-aborts-benchmark",
        "pyro_irm/benchmark/protocol.py",
        "except FitDivergedError as error:",
        "except ZeroDivisionError as error:",
        ("tests/benchmark/test_benchmark.py::test_a_fit_that_diverges_is_scored_n_a_and_named_not_fatal",),
    ),
    Mutation(
        "stock-export-pad-not-chosen",
        "pyro_irm/export/stock.py",
        "pad_token, added = choose_pad_token(tokenizer, encoder_config.text_mode)",
        "pad_token, added = tokenizer.pad_token, False",
        (
            "tests/export/test_stock.py::test_a_pad_token_the_template_writes_is_replaced_so_the_last_token_is_found",
        ),
    ),
    Mutation(
        "left-padding-positions-shifted",
        "pyro_irm/encoders/encoder.py",
        'inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0).to(self.device)',
        "pass",
        (
            "tests/encoders/test_decoders.py::test_last_token_pooling_equals_the_state_read_by_hand_under_either_padding_side",
        ),
    ),
    Mutation(
        "last-token-assumes-right-padding",
        "pyro_irm/encoders/encoder.py",
        "last = (positions * attention_mask).argmax(-1)",
        "last = attention_mask.sum(-1) - 1",
        (
            "tests/encoders/test_decoders.py::test_last_token_pooling_equals_the_state_read_by_hand_under_either_padding_side",
        ),
    ),
    Mutation(
        "cache-writers-unlocked",
        "pyro_irm/encoders/cache.py",
        """        with self._lock:
            self._take_in_new_rows()
            for path, payload in (""",
        """        if True:
            for path, payload in (""",
        ("tests/encoders/test_cache_concurrency.py",),
    ),
    Mutation(
        "embed-shards-overlap",
        "pyro_irm/encoders/encoder.py",
        "if index % world != rank:",
        "if False:",
        ("tests/encoders/test_decoders.py::test_two_processes_embed_what_one_process_embeds",),
    ),
    Mutation(
        "run-digests-not-checked",
        "pyro_irm/runs.py",
        '        verify_digests(directory, info.get("digests"))\n        try:',
        "        try:",
        ("tests/test_reliability.py::test_a_run_whose_weights_were_replaced_is_refused_naming_the_file",),
    ),
    Mutation(
        "lenient-csv-quotes",
        "pyro_irm/data/readers.py",
        "reader = csv.DictReader(handle, delimiter=delimiter, strict=True)",
        "reader = csv.DictReader(handle, delimiter=delimiter)",
        ("tests/test_reliability.py::test_a_csv_quote_that_never_closes_is_named_by_the_row_that_opened_it",),
    ),
    Mutation(
        "a-failed-batch-fails-every-request",
        "pyro_irm/serve.py",
        "                if len(batch) == 1:  # the request learns of it; the server goes on",
        "                if True:",
        ("tests/test_serve.py::test_one_bad_request_among_thirty_concurrent_ones_fails_alone",),
    ),
    Mutation(
        "no-body-limit",
        "pyro_irm/serve.py",
        "    app.add_middleware(BodyLimit, limit=max_body_bytes)",
        "",
        ("tests/test_serve.py::test_a_body_over_the_limit_gets_413_and_the_server_goes_on",),
    ),
    Mutation(
        "config-values-not-type-checked",
        "pyro_irm/cli/options.py",
        "        if (should := _type_problem(value, hints[key], choices)) is not None:",
        "        if (should := _type_problem(value, hints[key], choices)) is not None and False:",
        ("tests/test_generated_inputs.py::test_a_generated_config_fits_or_is_refused_naming_the_file",),
    ),
    Mutation(
        "one-class-training-split-accepted",
        "pyro_irm/inference/svi.py",
        "    if len(validation_index):\n"
        "        check_learnable(data, config.method, actions, train_rows=train_index)",
        "",
        ("tests/test_reliability.py::test_a_training_split_with_one_class_is_refused",),
    ),
    Mutation(
        "behaviour-by-method-name",
        "pyro_irm/inference/objectives.py",
        "    if not get_estimator(config.method).latent_groups:\n        return Rows(",
        '    if config.method != "implicitrm":\n        return Rows(',
        ("tests/test_extensions.py::test_a_registered_variant_of_implicitrm_fits_exactly_as_implicitrm",),
    ),
    Mutation(
        "engagement-network-not-saved",
        "pyro_irm/models/reward_model.py",
        '        "propensity": None if propensity is None else describe(propensity),',
        '        "propensity": None,',
        ("tests/test_extensions.py::test_a_users_engagement_network_and_channel_reload_with_their_settings",),
    ),
    Mutation(
        "missing-cell-not-masked",
        "pyro_irm/models/implicit.py",
        "            with poutine.mask(mask=present):",
        "            with poutine.mask(mask=torch.ones_like(present)):",
        ("tests/models/test_channel_kinds.py::test_a_missing_cell_is_marginalized_exactly",),
    ),
    Mutation(
        "early-stopping-ignores-min-delta",
        "pyro_irm/inference/loop.py",
        "            if value > state.best_value + config.min_delta:",
        "            if value > state.best_value:",
        ("tests/inference/test_loop.py",),
    ),
    Mutation(
        "users-model-left-out-of-the-benchmark",
        "pyro_irm/benchmark/protocol.py",
        "                user_model = builders[name](train)",
        "                builders[name](train)",
        ("tests/benchmark/test_benchmark.py::test_a_users_model_joins_the_benchmark_under_its_own_name",),
    ),
    Mutation(
        "ips-runaway-discards-the-fit",
        "pyro_irm/estimators/weighting.py",
        "    risk_unbounded_below: ClassVar[bool] = True",
        "    risk_unbounded_below: ClassVar[bool] = False",
        (
            "tests/estimators/test_wiring.py::test_an_ips_risk_that_runs_away_below_zero_keeps_its_best_held_out_epoch",
        ),
    ),
)


def run(mutation: Mutation) -> tuple[bool, float]:
    """True when the tests fail on the mutated copy (the mutation is caught). A mutation whose
    ``original`` and ``mutated`` are equal runs the tests on an unmutated copy (the control)."""
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutation.name}_") as directory:
        copy = Path(directory)
        for part in ("pyro_irm", "tests", "pyproject.toml"):
            source = ROOT / part
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy / part)
        target = copy / mutation.file
        text = target.read_text()
        if text.count(mutation.original) != 1:
            raise SystemExit(
                f"{mutation.name}: the original text is not found exactly once in {mutation.file}"
            )
        target.write_text(text.replace(mutation.original, mutation.mutated))
        environment = {**os.environ, "PYTHONPATH": str(copy)}
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *mutation.tests],
            cwd=copy,
            env=environment,
            capture_output=True,
            text=True,
        )
        return result.returncode != 0, time.perf_counter() - started


def main(names: list[str]) -> int:
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    # The control: on an unmutated copy every chosen test passes, so a failure below is the mutation's.
    tests = tuple(dict.fromkeys(test for m in chosen for test in m.tests))
    control = Mutation("control", chosen[0].file, chosen[0].original, chosen[0].original, tests)
    failed, seconds = run(control)
    print(f"{'FAILED' if failed else 'passed':<7} {'control (no mutation)':<30} {seconds:6.1f} s", flush=True)
    if failed:
        print("the tests fail on an unmutated copy; fix them before reading mutations", file=sys.stderr)
        return 2
    missed = []
    for mutation in chosen:
        caught, seconds = run(mutation)
        print(f"{'caught' if caught else 'MISSED':<7} {mutation.name:<30} {seconds:6.1f} s", flush=True)
        if not caught:
            missed.append(mutation.name)
    print(f"\n{len(chosen) - len(missed)} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
