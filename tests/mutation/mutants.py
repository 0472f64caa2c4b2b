"""Hand-written source mutations of grokscope/measures, grokscope/analysis and grokscope/store.

Each mutant: an id, the file (relative to the repository root), an exact snippet of that file (it must occur exactly
once), its replacement, and the tests that should catch it. The list mixes the issue's examples (a sign flipped in
the restricted loss, a key frequency dropped, the fsync skipped) with a systematic set: comparisons flipped,
off-by-ones in slices and ranges, operands swapped, a term dropped, a constant changed, a branch removed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    original: str
    replacement: str
    what: str
    tests: tuple[str, ...] = ()  # pytest arguments; empty: the package's default selection

    @property
    def package(self) -> str:
        return self.file.split("/")[1]


# the default test selection of each package (a mutant may name its own)
PACKAGE_TESTS = {
    "measures": ("tests/test_progress.py", "tests/test_fourier.py", "tests/test_phases.py"),
    "analysis": ("tests/test_analysis.py", "tests/test_zoo_analyze.py"),
    "store": ("tests/test_store.py", "tests/test_faults.py", "-k", "not fault_loop"),
}
# new tests written to kill survivors of a first round (tests/test_mutation_kills.py); added to every selection
KILL_TESTS = "tests/test_mutation_kills.py"

PR = "grokscope/measures/progress.py"
GR = "grokscope/measures/grid.py"
KE = "grokscope/measures/keys.py"
FO = "grokscope/measures/fourier.py"
PH = "grokscope/measures/phases.py"
RV = "grokscope/analysis/reverse.py"
LG = "grokscope/analysis/logits.py"
TB = "grokscope/analysis/tables.py"
CO = "grokscope/analysis/construct.py"
ZO = "grokscope/analysis/zoo.py"
AC = "grokscope/analysis/run.py"
FI = "grokscope/store/files.py"
ME = "grokscope/store/metrics.py"
RU = "grokscope/store/run.py"

M = Mutant
MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ measures/progress.py
    M(
        "restricted-sign",
        PR,
        "_per_label_scores(const + key, sums[0])",
        "_per_label_scores(const - key, sums[0])",
        "flip a sign in the restricted loss (issue's example)",
    ),
    M(
        "excluded-sign",
        PR,
        "cross_entropy(tr_table - key[tr_labels], tr_labels)",
        "cross_entropy(tr_table + key[tr_labels], tr_labels)",
        "flip a sign in the excluded loss",
    ),
    M(
        "restricted-drop-key-freq",
        PR,
        "const, key = label_wave_fit(table, labels, p, freqs, sums=sums)",
        "const, key = label_wave_fit(table, labels, p, freqs[:-1], sums=sums)",
        "drop a key frequency from the restricted/excluded fit (issue's example)",
    ),
    M(
        "gap-rule-drop-key-freq",
        KE,
        "return sorted(int(i) + 1 for i in order[: m + 1])",
        "return sorted(int(i) + 1 for i in order[:m])",
        "off-by-one: the largest-gap rule drops one key frequency (issue's example)",
    ),
    M(
        "gap-rule-flip-comparison",
        KE,
        "if float(ratios[m]) < ratio:",
        "if float(ratios[m]) > ratio:",
        "flip the gap acceptance test",
    ),
    M(
        "gap-rule-ratio-boundary",
        KE,
        "if float(ratios[m]) < ratio:",
        "if float(ratios[m]) <= ratio:",
        "accept/reject boundary of the gap ratio (< to <=)",
    ),
    M("gap-ratio-constant", KE, "KEY_GAP_RATIO = 2.0", "KEY_GAP_RATIO = 1.2", "change the gap-ratio constant"),
    M("gini-constant-term", PR, "- (n + 1) / n)", "- (n - 1) / n)", "Gini: (n+1)/n -> (n-1)/n"),
    M("gini-no-sort", PR, ".abs().sort().values", ".abs()", "Gini: drop the sort"),
    M(
        "sum-sq-abs",
        PR,
        "np.sum(w.detach().to(torch.float64).numpy() ** 2)",
        "np.sum(np.abs(w.detach().to(torch.float64).numpy()))",
        "sum of squared weights -> sum of absolute weights",
    ),
    M(
        "fcr-min-max-swapped",
        PR,
        "ratio = torch.minimum(c, s)[used] / torch.maximum(c, s)[used]",
        "ratio = torch.maximum(c, s)[used] / torch.minimum(c, s)[used]",
        "FCR: swap min and max",
    ),
    M(
        "ffs-sum-not-mean",
        PR,
        "return float(used.to(torch.float64).mean())",
        "return float(used.to(torch.float64).sum())",
        "FFS: count instead of fraction",
    ),
    M("ffs-eta-comparison", PR, "used = n > eta * n.max()", "used = n >= eta * n.max()", "FFS threshold > to >="),
    M(
        "online-drop-factor",
        KE,
        "energy >= factor * energy.mean()",
        "energy >= energy.mean()",
        "online rule: drop the energy factor",
    ),
    M(
        "harmonic-min-max",
        GR,
        "return min(2 * k % p, p - 2 * k % p)",
        "return max(2 * k % p, p - 2 * k % p)",
        "harmonic index: min -> max",
    ),
    M(
        "block-drop-constant-row",
        GR,
        "        idx = torch.tensor([0, 2 * k - 1, 2 * k], device=energy.device)\n        e = energy",
        "        idx = torch.tensor([2 * k - 1, 2 * k], device=energy.device)\n        e = energy",
        "neuron 3x3 block -> 2x2 block (drop a term)",
    ),
    M(
        "neuron-energy-keep-mean",
        GR,
        "    energy[0, 0] = 0.0\n    return energy",
        "    return energy",
        "neuron energy: keep the mean component",
    ),
    M(
        "we-norm-index-off-by-one",
        KE,
        "return sorted({(int(i) + 1) // 2 for i in keep})",
        "return sorted({int(i) // 2 for i in keep})",
        "W_E_norm rule: frequency of a row off by one",
    ),
    M(
        "we-norm-fraction-constant",
        KE,
        "W_E_NORM_FRACTION = 0.25",
        "W_E_NORM_FRACTION = 0.6",
        "change the W_E_norm fraction",
    ),
    M(
        "fve-threshold-constant",
        KE,
        "NEURON_FVE_THRESHOLD = 0.85",
        "NEURON_FVE_THRESHOLD = 0.5",
        "change the neuron FVE threshold",
    ),
    M(
        "ce-argmin",
        GR,
        "acc = (table.argmax(dim=-1) == labels)",
        "acc = (table.argmin(dim=-1) == labels)",
        "accuracy by argmin",
    ),
    M(
        "ce-sign",
        GR,
        "loss = -logp.gather(1, labels[:, None]).mean()",
        "loss = logp.gather(1, labels[:, None]).mean()",
        "cross-entropy sign",
    ),
    M(
        "design-drop-sin",
        PR,
        "cols += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]",
        "cols += [torch.cos(2 * math.pi * k * s / p)]",
        "wave fit: drop the sine regressor",
    ),
    M(
        "fit-drop-constant",
        PR,
        "const = x[:, :1] @ beta[:1]",
        "const = 0 * (x[:, :1] @ beta[:1])",
        "wave fit: drop the constant part",
    ),
    M(
        "per-label-unweighted",
        PR,
        "return float((counts * ce).sum() / total), float((counts * hit).sum() / total)",
        "return float(ce.mean()), float(hit.mean())",
        "restricted scores not weighted by label counts",
    ),
    M(
        "label-sums-no-fast-path",
        PR,
        "if bool((counts == counts[0]).all()) and int(counts[0]) > 0:",
        "if False and bool((counts == counts[0]).all()):",
        "label sums: always the index_add path",
    ),
    M(
        "train-rows-wrong-permutation",
        PR,
        "labels, grid_rows(task, task.train_idx), p",
        "labels, grid_order(task)[task.train_idx], p",
        "training rows through the wrong permutation",
    ),
    M(
        "gini-wl-uses-we",
        PR,
        "out[names.GINI_W_L] = gini(frequency_norms(w_l, dim=1))",
        "out[names.GINI_W_L] = gini(frequency_norms(w_e, dim=0))",
        "swap operands: Gini of W_L computed on W_E",
    ),
    M(
        "n-key-freqs-off-by-one",
        PR,
        "out[names.N_KEY_FREQS] = float(len(freqs))\n        out[names.KEY_FREQS_FIXED] = 1.0 if given",
        "out[names.N_KEY_FREQS] = float(len(freqs) - 1)\n        out[names.KEY_FREQS_FIXED] = 1.0 if given",
        "n_key_freqs off by one",
    ),
    M(
        "fixed-key-from-first-checkpoint",
        PR,
        "final if final is not None else items[-1][1]",
        "final if final is not None else items[0][1]",
        "second pass takes the key set from the first checkpoint",
    ),
    M(
        "logit-table-no-grid-order",
        GR,
        "    return table[grid_order(task)]\n",
        "    return table\n",
        "logit table left in task order",
    ),
    M("check-task-no-full-grid", GR, "if not task.is_full_grid:", "if False:", "drop the full-grid check"),
    # ------------------------------------------------------------------ measures/fourier.py
    M(
        "basis-sin-norm-constant",
        FO,
        "rows.append(torch.sin(angle) * math.sqrt(2.0 / n))",
        "rows.append(torch.sin(angle) * math.sqrt(1.0 / n))",
        "sine rows not normalised",
    ),
    M(
        "basis-range-off-by-one",
        FO,
        "for k in range(1, (n + 1) // 2):\n        angle",
        "for k in range(1, n // 2 + 1):\n        angle",
        "basis frequency range off by one",
    ),
    M("basis-index-cos", FO, "        return 2 * k - 1\n", "        return 2 * k + 1\n", "cos row index off by two"),
    M("frequency-of-index", FO, "return (i + 1) // 2", "return i // 2", "frequency of a row off by one"),
    M(
        "frequency-norms-drop-sin",
        FO,
        "torch.sqrt(comps[1::2] ** 2 + comps[2::2] ** 2)",
        "torch.sqrt(comps[1::2] ** 2)",
        "frequency norm: drop the sine term",
    ),
    M(
        "abc-sign",
        FO,
        "d = (s[:, None] - torch.arange(p)[None, :]) % p",
        "d = (s[:, None] + torch.arange(p)[None, :]) % p",
        "a+b-c -> a+b+c",
    ),
    M(
        "abc-scale-constant",
        FO,
        "scale = math.sqrt(2.0 / p**3)",
        "scale = math.sqrt(1.0 / p**3)",
        "abc wave scale constant",
    ),
    M(
        "primitive-root-any",
        FO,
        "if all(pow(g, (p - 1) // q, p) != 1 for q in factors):",
        "if any(pow(g, (p - 1) // q, p) != 1 for q in factors):",
        "primitive root test all -> any",
    ),
    M("discrete-log-step", FO, "x = x * g % p", "x = (x + g) % p", "discrete log walks by addition"),
    M(
        "is-prime-off-by-one",
        "grokscope/formula.py",
        "range(2, math.isqrt(n) + 1)",
        "range(2, math.isqrt(n))",
        "is_prime misses square factors",
        ("tests/test_config.py",),
    ),
    M(
        "inverse-not-transposed",
        FO,
        "return fourier_transform(coeffs, dim=dim, basis=basis.T.contiguous())",
        "return fourier_transform(coeffs, dim=dim, basis=basis)",
        "inverse transform without the transpose",
    ),
    M(
        "transform-2d-same-axis",
        FO,
        "return fourier_transform(fourier_transform(x, dim=0, basis=basis), dim=1, basis=basis)",
        "return fourier_transform(fourier_transform(x, dim=0, basis=basis), dim=0, basis=basis)",
        "2D transform along one axis twice",
    ),
    M(
        "dlog-basis-columns",
        FO,
        "return base[:, log[1:]]",
        "return base[:, log[:-1]]",
        "discrete-log basis columns shifted",
    ),
    # ------------------------------------------------------------------ measures/phases.py
    M("grok-acc-constant", PH, "GROK_ACC = 0.99", "GROK_ACC = 0.9", "grok threshold constant"),
    M("first-at-least-strict", PH, "hit = s[s >= threshold]", "hit = s[s > threshold]", "grok threshold >= to >"),
    M(
        "first-at-least-last",
        PH,
        "return int(hit.index[0]) if len(hit) else None",
        "return int(hit.index[-1]) if len(hit) else None",
        "last instead of first crossing",
    ),
    M(
        "mem-end-idxmax",
        PH,
        "mem_end = int(window.idxmin())",
        "mem_end = int(window.idxmax())",
        "memorisation end at the maximum",
    ),
    M(
        "still-high-sign",
        PH,
        "before[before >= hi - PHASE_FRACTION * span]",
        "before[before >= hi + PHASE_FRACTION * span]",
        "circuit formation threshold sign",
    ),
    M(
        "circ-end-first",
        PH,
        "circ_end = int(still_high.index[-1])",
        "circ_end = int(still_high.index[0])",
        "circuit formation end: first not last",
    ),
    M(
        "done-flip",
        PH,
        "done = after[after <= lo + PHASE_FRACTION * span]",
        "done = after[after >= lo + PHASE_FRACTION * span]",
        "cleanup comparison flipped",
    ),
    M(
        "phase-at-boundary",
        PH,
        "if step < self.memorisation_end:",
        "if step <= self.memorisation_end:",
        "phase_at boundary < to <=",
    ),
    M("smooth-window-constant", PH, "SMOOTH_WINDOW = 5", "SMOOTH_WINDOW = 1", "no smoothing"),
    # ------------------------------------------------------------------ analysis/reverse.py
    M(
        "an-restricted-sign",
        LG,
        '(restricted)", (const + key)[labels])',
        '(restricted)", (const - key)[labels])',
        "flip a sign in the analysis' restricted loss (issue's example)",
    ),
    M(
        "an-excluded-sign",
        LG,
        'row("remove all key freqs", table - key[labels])',
        'row("remove all key freqs", table + key[labels])',
        "flip a sign in the excluded table",
    ),
    M(
        "an-drop-key-freq",
        LG,
        "const, key = wave_fit(table, labels, n, freqs)",
        "const, key = wave_fit(table, labels, n, freqs[1:])",
        "drop a key frequency from the analysis' fit (issue's example)",
    ),
    M(
        "an-excluded-k-uses-all",
        LG,
        'row(f"remove k={k}", table - key_k[labels])',
        'row(f"remove k={k}", table - key[labels])',
        "per-frequency excluded loss removes every key",
    ),
    M(
        "logit-fit-norm-constant",
        LG,
        "norm_sq = rows * n / (1.0 if 2 * k == n else 2.0)",
        "norm_sq = rows * n / (1.0 if 2 * k == n else 4.0)",
        "logit fit normaliser constant",
    ),
    M(
        "logit-fit-sign",
        LG,
        "d = (labels[:, None] - torch.arange(n, device=labels.device)[None, :]) % n  # s - c",
        "d = (labels[:, None] + torch.arange(n, device=labels.device)[None, :]) % n  # s - c",
        "logit fit wave s-c -> s+c",
    ),
    M(
        "logit-fit-fve",
        LG,
        "fve = 1.0 - float(((centred - fit) ** 2).sum()) / total",
        "fve = float(((centred - fit) ** 2).sum()) / total",
        "FVE reports the unexplained fraction",
    ),
    M(
        "logit-fit-no-centring",
        LG,
        "centred = table - table.mean(dim=1, keepdim=True)",
        "centred = table",
        "logit fit: no row centring",
    ),
    M(
        "block-mask-branches-swapped",
        LG,
        "frequency_rows(k, n) if product_only else [0, *frequency_rows(k, n)]",
        "[0, *frequency_rows(k, n)] if product_only else frequency_rows(k, n)",
        "block mask: the two ablations swapped",
    ),
    M(
        "block-mask-drop-constant",
        LG,
        "    mask[0, 0] = 1.0\n    for k in freqs:",
        "    for k in freqs:",
        "block mask drops the constant",
    ),
    M(
        "poly-fit-where-swapped",
        RV,
        "torch.where(explained[None, :], fit, acts.to(torch.float64))",
        "torch.where(explained[None, :], acts.to(torch.float64), fit)",
        "polynomial fit applied to the wrong neurons",
    ),
    M(
        "attention-wrong-key-position",
        RV,
        'hook_pattern"][:, :, -1, 0]',
        'hook_pattern"][:, :, -1, 1]',
        "attention to the second token",
    ),
    M(
        "attention-drop-b-terms",
        RV,
        "    for r in rows:\n        out = out + energy[r, 0]\n",
        "",
        "attention fit: drop the a terms",
    ),
    M(
        "star-freq-off-by-one",
        RV,
        "freq = _pair_norms(h).argmax(dim=0) + 1",
        "freq = _pair_norms(h).argmax(dim=0) + 2",
        "star plot frequency off by one",
    ),
    M(
        "star-atan2-swapped",
        RV,
        "math.atan2(si, ci), co, so",
        "math.atan2(ci, si), co, so",
        "star plot input angle: atan2 operands swapped",
    ),
    M(
        "residual-no-sqrt",
        RV,
        "residual = math.sqrt(max(total_wl - key_energy, 0.0) / total_wl)",
        "residual = max(total_wl - key_energy, 0.0) / total_wl",
        "W_L residual without the square root",
    ),
    M(
        "explained-strict",
        RV,
        "explained = arg + 1, best >= NEURON_FVE_THRESHOLD",
        "explained = arg + 1, best > NEURON_FVE_THRESHOLD",
        "explained neurons >= to >",
    ),
    M(
        "mlp-std-unbiased",
        RV,
        "key_best.std(unbiased=False)",
        "key_best.std(unbiased=True)",
        "MLP FVE std: population -> sample",
    ),
    M("mlp-fve-dead-neurons", RV, ".max(dim=0).values[alive]", ".max(dim=0).values", "MLP FVE counts dead neurons"),
    M(
        "train-test-swapped",
        RV,
        "rows, labels, train, test, logits[rows]",
        "rows, labels, test, train, logits[rows]",
        "train and test rows swapped",
    ),
    M(
        "table5-gini-swapped",
        RV,
        "Table5Row(losses[names.TEST_LOSS], g_we, g_wl,",
        "Table5Row(losses[names.TEST_LOSS], g_wl, g_we,",
        "Table 5: Gini columns swapped",
    ),
    # ------------------------------------------------------------- analysis/tables.py, construct.py, zoo.py, run.py
    M(
        "table-width-headers-only",
        TB,
        "widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]",
        "widths = [len(h) for h in headers]",
        "text table widths ignore the cells",
    ),
    M(
        "table-top-ascending",
        TB,
        "key=lambda i: -a.W_E_frequency_norms[i])[:top]",
        "key=lambda i: a.W_E_frequency_norms[i])[:top]",
        "Fourier table lists the weakest frequencies",
    ),
    M(
        "wave-table-sign",
        CO,
        "(s[:, None] - c[None, :]) / p)",
        "(s[:, None] + c[None, :]) / p)",
        "constructed wave table a+b+c",
    ),
    M(
        "quadratic-out-angle",
        CO,
        "scale * torch.cos(2 * theta), scale * torch.sin(2 * theta)",
        "scale * torch.cos(theta), scale * torch.sin(theta)",
        "constructed network writes the wrong angle",
    ),
    M(
        "zoo-ffs-flip",
        PR,
        "used = n > eta * n.max()\n    ratio",
        "used = n < eta * n.max()\n    ratio",
        "zoo FFS comparison flipped",
    ),
    M(
        "zoo-energy-a-axis",
        ZO,
        '"energy_a": float((A.mean(dim=1) ** 2).sum())',
        '"energy_a": float((A.mean(dim=0) ** 2).sum())',
        "operand energy axes swapped",
    ),
    M(
        "zoo-symmetric-tautology",
        ZO,
        '"symmetric": bool(torch.equal(f, f.T))',
        '"symmetric": bool(torch.equal(f, f))',
        "symmetry test always true",
    ),
    M(
        "zoo-separable-sign",
        ZO,
        "(f - f[:, :1] - f[:1, :] + f[0, 0]) % p",
        "(f - f[:, :1] - f[:1, :] - f[0, 0]) % p",
        "separability test sign",
    ),
    M("zoo-sparser-margin-sign", ZO, "if add < log - margin:", "if add < log + margin:", "sparser basis margin sign"),
    M(
        "zoo-shift-sign",
        ZO,
        "by_u = w[(torch.arange(p, device=w.device) - shift) % p]",
        "by_u = w[(torch.arange(p, device=w.device) + shift) % p]",
        "discrete-log shift sign",
    ),
    M(
        "zoo-kmax-off-by-one",
        ZO,
        "k_max = (p - 1) // 2 - 1",
        "k_max = (p - 1) // 2 - 2",
        "discrete-log frequencies: one too few",
    ),
    M(
        "zoo-parity-constant-bit",
        ZO,
        "bits = w_in[:-1].abs()",
        "bits = w_in.abs()",
        "parity bits include the constant input",
    ),
    M(
        "zoo-acc-argmin",
        ZO,
        'out[f"{split}_acc"] = (z.argmax(-1) == y)',
        'out[f"{split}_acc"] = (z.argmin(-1) == y)',
        "zoo accuracy by argmin",
    ),
    M(
        "cli-default-first-step",
        AC,
        "        step = steps[-1]\n    elif step not in steps:",
        "        step = steps[0]\n    elif step not in steps:",
        "analyze defaults to the first checkpoint",
    ),
    M(
        "cli-fixed-writes-nothing",
        AC,
        "for k, v in row.items() if v == v}",
        "for k, v in row.items() if v != v}",
        "--all-steps writes no fixed metrics",
    ),
    # ------------------------------------------------------------------ store/files.py
    M(
        "skip-fsync",
        FI,
        "            os.fsync(f.fileno())\n",
        "            pass\n",
        "skip the fsync of the written file (issue's example)",
    ),
    M(
        "skip-dir-fsync",
        FI,
        "        raise\n    _fsync_dir(path.parent)\n",
        "        raise\n",
        "skip the fsync of the directory after the rename",
    ),
    M(
        "fsync-before-flush",
        FI,
        "            f.flush()\n            os.fsync(f.fileno())\n",
        "            os.fsync(f.fileno())\n            f.flush()\n",
        "fsync before the buffered data is flushed",
    ),
    M(
        "no-unlink-tmp",
        FI,
        "            os.unlink(tmp)\n",
        "            pass\n",
        "leave the temporary behind on a failed write",
    ),
    M("no-fchmod", FI, "            os.fchmod(f.fileno(), _FILE_MODE)\n", "", "written files keep mkstemp's 0600"),
    M(
        "no-alignment-padding",
        FI,
        '    text += b" " * (-len(text) % 8)',
        "",
        "safetensors header not padded to 8 bytes",
    ),
    M(
        "checksum-off-by-one",
        FI,
        "hashlib.sha256(data[8 + n :]).hexdigest() != stored",
        "hashlib.sha256(data[9 + n :]).hexdigest() != stored",
        "checksum over the wrong bytes",
    ),
    M(
        "checksum-not-checked",
        FI,
        "if stored is not None and hashlib",
        "if False and hashlib",
        "checksum never compared",
    ),
    M("header-bound", FI, "if n > len(data) - 8:", "if n > len(data):", "truncated header bound off by 8"),
    M(
        "extra-bytes-accepted",
        FI,
        "if 8 + n + end != len(data):",
        "if 8 + n + end > len(data):",
        "extra bytes after the data accepted",
    ),
    M(
        "truncated-what-flipped",
        FI,
        'what = "truncated" if 8 + n + end > len(data)',
        'what = "truncated" if 8 + n + end < len(data)',
        "truncated/extra swapped",
    ),
    M("short-file-bound", FI, "if len(data) < 8:", "if len(data) < 4:", "short-file bound constant"),
    M("header-not-sorted", FI, "sort_keys=True", "sort_keys=False", "safetensors header not canonical"),
    M(
        "checksum-leaks-into-metadata",
        FI,
        "return tensors, {k: v for k, v in meta.items() if k != CHECKSUM_KEY}",
        "return tensors, dict(meta)",
        "load_tensors returns the checksum as metadata",
    ),
    # ------------------------------------------------------------------ store/metrics.py
    M("nan-stored", ME, "return v if math.isfinite(v) else None", "return v", "non-finite values stored as numbers"),
    M(
        "truncate-after-inclusive",
        ME,
        "DELETE FROM metrics WHERE step > ?",
        "DELETE FROM metrics WHERE step >= ?",
        "truncate_after drops the resume step too",
    ),
    M(
        "insert-or-ignore",
        ME,
        "INSERT OR REPLACE INTO metrics",
        "INSERT OR IGNORE INTO metrics",
        "re-logged steps keep stale values",
    ),
    M(
        "full-disk-not-enospc",
        ME,
        'if "full" in text:',
        'if "no such text" in text:',
        "SQLite's full-disk error not reported as ENOSPC",
    ),
    M(
        "synchronous-off",
        ME,
        'self.conn.execute("PRAGMA synchronous=NORMAL")',
        'self.conn.execute("PRAGMA synchronous=OFF")',
        "SQLite never syncs",
    ),
    M(
        "journal-delete",
        ME,
        'self.conn.execute("PRAGMA journal_mode=WAL")',
        'self.conn.execute("PRAGMA journal_mode=DELETE")',
        "rollback journal instead of WAL",
    ),
    M(
        "rows-unordered",
        ME,
        'cur = self.conn.execute("SELECT step, name, value FROM metrics ORDER BY step, name")',
        'cur = self.conn.execute("SELECT step, name, value FROM metrics ORDER BY step DESC, name")',
        "rows in the wrong order",
    ),
    M(
        "last-step-min",
        ME,
        "SELECT max(step) FROM metrics",
        "SELECT min(step) FROM metrics",
        "last_step returns the first",
    ),
    M(
        "meta-insert-or-ignore",
        ME,
        "INSERT OR REPLACE INTO meta",
        "INSERT OR IGNORE INTO meta",
        "meta values never updated",
    ),
    # ------------------------------------------------------------------ store/run.py
    M(
        "checkpoints-unsorted",
        RU,
        "return sorted(int(m.group(1)) for f in folder.iterdir() if (m := _CKPT.match(f.name)))",
        "return [int(m.group(1)) for f in folder.iterdir() if (m := _CKPT.match(f.name))]",
        "checkpoints in directory order",
    ),
    M(
        "load-first-checkpoint",
        RU,
        "        if step is None:\n            step = steps[-1]\n        if step not in steps:",
        "        if step is None:\n            step = steps[0]\n        if step not in steps:",
        "load_state_dict defaults to the first checkpoint",
    ),
    M(
        "advice-boundary",
        RU,
        "if epoch is not None and step >= epoch:",
        "if epoch is not None and step > epoch:",
        "checkpoint at the resume point called unrebuildable",
    ),
    M(
        "check-run-resume-boundary",
        RU,
        "if resume and epoch is not None and step >= epoch:",
        "if resume and epoch is not None and step > epoch:",
        "a damaged checkpoint at the resume point blocks resuming",
    ),
    M(
        "write-json-dotfile",
        RU,
        'if "/" in name or name.startswith("."):',
        'if "/" in name:',
        "write_json accepts dot files",
    ),
    M(
        "stale-keeps-state-tmp",
        RU,
        'stale = [*run_dir.glob(f".{STATE}.*.tmp"), ',
        "stale = [",
        "stale state temporaries are kept",
    ),
    M(
        "metrics-unsorted",
        RU,
        "        return wide.sort_index()\n",
        "        return wide\n",
        "metrics DataFrame not sorted by step",
    ),
    M(
        "repair-always",
        RU,
        "        check_tensors_file(path)\n        return False\n",
        "        check_tensors_file(path)\n        save_checkpoint(run_dir, step, state)\n        return True\n",
        "repair_checkpoint rewrites good checkpoints",
    ),
    M(
        "state-epoch-missing-metrics",
        RU,
        "if resume and epoch and not (run_dir / METRICS).is_file():",
        "if False:",
        "resume without a metrics database allowed",
    ),
]
