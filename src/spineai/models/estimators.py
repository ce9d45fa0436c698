"""The classifiers: the study's two network shapes with SpineAI's switches, the comparators, and a
soft-vote ensemble of three families.

Every fitted model predicts with numpy (and xgboost for tree models) from plain arrays, so a bundle
never needs torch or a pickle: torch is imported only to train networks that use batch
normalisation, dropout, Adam, early stopping or class weights; plain gradient descent (the study's
update rule) runs in the compiled loop of ``gridtrain``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from spineai.errors import SpineAIError

MODEL_NAMES = ("mlp-a", "mlp-b", "logreg", "svm", "rf", "xgboost", "ensemble")
HIDDEN = {"mlp-a": (6,), "mlp-b": (7, 3)}
# The ensemble's members, one per family (linear, trees, network), each at its defaults; one tree
# model at most, as a bundle holds one booster.
ENSEMBLE_MEMBERS = ("logreg", "rf", "mlp-a")
MODES = {"batch": None, "stochastic": 1, "minibatch": 16}


@dataclass(frozen=True)
class Config:
    """A model and its switches. Network defaults: mini-batch (b = 16) gradient descent at learning
    rate 0.0075, the setting the study's write-up found best, with SpineAI's own min-max scaling
    fitted on the training data and Glorot initialisation (the study's L2 normalisation of each
    table by its own norms cannot score a single new case; see ``spineai study --recipe study``)."""

    model: str = "mlp-b"
    scaling: str = "minmax"  # "minmax" | "standard"
    select_k: int | None = None  # SelectKBest (ANOVA F) on the training data
    batchnorm: bool = False
    dropout: float = 0.0
    optimizer: str = "sgd"  # "sgd" | "adam"
    early_stopping: bool = False  # on an inner stratified validation split (20 %)
    class_weights: bool = False
    mode: str = "minibatch"
    iterations: int = 5000  # epochs: each passes every training sample once
    learning_rate: float = 0.0075
    C: float = 1.0  # logreg / svm regularisation
    n_estimators: int = 200  # xgboost rounds / forest trees
    max_depth: int = 3
    seed: int = 0

    def __post_init__(self):
        if self.model not in MODEL_NAMES:
            raise SpineAIError(f"unknown model {self.model!r}: choose one of {', '.join(MODEL_NAMES)} or auto")
        if self.scaling not in ("minmax", "standard", "none"):
            raise SpineAIError(f"unknown scaling {self.scaling!r}: minmax or standard")
        if self.mode not in MODES:
            raise SpineAIError(f"unknown training mode {self.mode!r}: {', '.join(MODES)}")
        if self.optimizer not in ("sgd", "adam"):
            raise SpineAIError(f"unknown optimizer {self.optimizer!r}: sgd or adam")
        if not 0.0 <= self.dropout < 1.0:
            raise SpineAIError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.iterations < 1 or self.learning_rate <= 0:
            raise SpineAIError("iterations must be >= 1 and the learning rate > 0")
        if self.select_k is not None and self.select_k < 1:
            raise SpineAIError(f"select_k must be >= 1, got {self.select_k}")

    @property
    def is_network(self) -> bool:
        return self.model in HIDDEN

    @property
    def plain_study_network(self) -> bool:
        return self.is_network and self.optimizer == "sgd" and not (
            self.batchnorm or self.dropout or self.early_stopping or self.class_weights
        )

    def describe(self) -> str:
        if self.model == "ensemble":
            return "ensemble (soft vote of " + ", ".join(c.describe() for c in ensemble_members(self)) + ")"
        if not self.is_network:
            extra = {"logreg": f"C={self.C}", "svm": f"RBF, C={self.C}", "rf": f"{self.n_estimators} trees",
                     "xgboost": f"{self.n_estimators} rounds, depth {self.max_depth}"}[self.model]
            return f"{self.model} ({self.scaling}{', k=' + str(self.select_k) if self.select_k else ''}, {extra})"
        sw = [self.scaling, self.mode, self.optimizer, f"lr={self.learning_rate:g}", f"{self.iterations} it"]
        sw += [s for s, on in (("batchnorm", self.batchnorm), (f"dropout={self.dropout:g}", self.dropout),
                               ("early-stopping", self.early_stopping), ("class-weights", self.class_weights),
                               (f"k={self.select_k}", self.select_k)) if on]
        return f"{self.model} ({', '.join(sw)})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ------------------------------------------------------------------------------------------------
# Preprocessing


@dataclass
class Preprocessor:
    scaling: str
    offset: np.ndarray
    scale: np.ndarray
    selected: np.ndarray  # int indices of the kept features, in order

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, scaling: str, select_k: int | None) -> "Preprocessor":
        if scaling == "minmax":
            off, sc = X.min(axis=0), np.ptp(X, axis=0)
        else:
            off, sc = X.mean(axis=0), X.std(axis=0)
        sc = np.where(sc > 0, sc, 1.0)
        selected = np.arange(X.shape[1])
        if select_k is not None and select_k < X.shape[1]:
            from sklearn.feature_selection import f_classif

            with np.errstate(all="ignore"):
                F, _ = f_classif((X - off) / sc, y)
            F = np.nan_to_num(F, nan=-1.0)
            selected = np.sort(np.argsort(-F, kind="stable")[:select_k])
        return cls(scaling, off, sc, selected)

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((X - self.offset) / self.scale)[:, self.selected]

    def to_json(self) -> dict:
        return {"scaling": self.scaling, "offset": self.offset.tolist(), "scale": self.scale.tolist(),
                "selected": self.selected.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Preprocessor":
        return cls(d["scaling"], np.asarray(d["offset"], float), np.asarray(d["scale"], float),
                   np.asarray(d["selected"], dtype=np.int64))


# ------------------------------------------------------------------------------------------------
# Fitted models: numpy prediction from arrays


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _probs_from_margin(margin: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 2:
        m = margin.reshape(-1)
        p1 = _sigmoid(m)
        return np.column_stack([1 - p1, p1])
    return _softmax(margin)


@dataclass
class FittedModel:
    """A trained model: the config, preprocessing, plain arrays and (tree models) a booster JSON."""

    config: Config
    n_classes: int
    pre: Preprocessor
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    booster_json: bytes | None = None
    history: dict[str, list] = field(default_factory=dict)
    _booster: Any = None

    # margin = log-odds of the positive class (binary) or per-class logits
    def margin(self, Z: np.ndarray) -> np.ndarray:
        kind = self.config.model
        if kind == "ensemble":
            p = np.clip(np.mean([m.predict_proba(Z) for m in self.params["fitted_members"]], axis=0), 1e-12, 1.0)
            return np.log(p[:, 1]) - np.log(p[:, 0]) if self.n_classes == 2 else np.log(p)
        if kind in HIDDEN:
            a = Z
            n = self.params["n_layers"]
            for i in range(n):
                a = a @ self.arrays[f"layer{i}.weight"].T + self.arrays[f"layer{i}.bias"]
                if i < n - 1:
                    a = np.tanh(a)
            return a[:, 0] if a.shape[1] == 1 else a
        if kind == "logreg":
            m = Z @ self.arrays["coef"].T + self.arrays["intercept"]
            return m[:, 0] if m.shape[1] == 1 else m
        if kind == "svm":
            sv, dual = self.arrays["support_vectors"], self.arrays["dual_coef"]
            gamma = self.params["gamma"]
            d2 = (Z * Z).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2 * Z @ sv.T
            K = np.exp(-gamma * np.maximum(d2, 0.0))
            out = []
            for c in range(dual.shape[0]):
                f = K[:, self.arrays["sv_owner"] == c] @ dual[c, self.arrays["sv_owner"] == c] + self.arrays["intercept"][c]
                out.append(self.arrays["platt_a"][c] * f + self.arrays["platt_b"][c])
            m = np.column_stack(out)
            if self.n_classes == 2:
                return m[:, 0]
            # one-vs-rest Platt probabilities, normalised, expressed as logits
            p = _sigmoid(m)
            p = p / p.sum(1, keepdims=True)
            return np.log(np.clip(p, 1e-12, 1.0))
        if kind in ("xgboost", "rf"):
            import xgboost as xgb

            return np.asarray(self.booster().predict(xgb.DMatrix(Z), output_margin=True), dtype=np.float64)
        raise SpineAIError(f"unknown model kind {kind!r}")

    def booster(self):
        if self._booster is None:
            import xgboost as xgb

            b = xgb.Booster()
            b.load_model(bytearray(self.booster_json))
            b.set_param({"nthread": 1})
            self._booster = b
        return self._booster

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _probs_from_margin(self.margin(self.pre.transform(X)), self.n_classes)

    def contributions(self, X: np.ndarray, reference: np.ndarray, feature_names: list[str]) -> tuple[np.ndarray, str]:
        """Per-case contribution of each input feature to the log-odds of each case's predicted class.

        Tree models: exact tree SHAP (XGBoost ``pred_contribs``). Logistic regression: coefficient
        times the scaled distance from the training median. Networks and SVM: occlusion, i.e. the
        change in log-odds when the feature is replaced by its training median (``reference``).
        Returns (n, n_features) and the method's name.
        """
        n, d = X.shape
        probs = self.predict_proba(X)
        pred = probs.argmax(1)
        out = np.zeros((n, d))
        kind = self.config.model
        sel = self.pre.selected
        if kind in ("xgboost", "rf"):
            import xgboost as xgb

            c = self.booster().predict(xgb.DMatrix(self.pre.transform(X)), pred_contribs=True)
            if self.n_classes == 2:
                sign = np.where(pred == 1, 1.0, -1.0)[:, None]
                out[:, sel] = c[:, :-1] * sign
            else:
                out[:, sel] = c[np.arange(n), pred, :-1]
            return out, "tree SHAP (xgboost pred_contribs), log-odds"
        if kind == "logreg":
            coef = self.arrays["coef"]
            dz = self.pre.transform(X) - self.pre.transform(reference[None])
            if self.n_classes == 2:
                sign = np.where(pred == 1, 1.0, -1.0)[:, None]
                out[:, sel] = dz * coef[0] * sign
            else:
                out[:, sel] = dz * coef[pred]
            return out, "coefficient x (value - training median), log-odds"
        logit = np.log(np.clip(probs[np.arange(n), pred], 1e-12, 1)) - np.log(np.clip(1 - probs[np.arange(n), pred], 1e-12, 1))
        for j in sel:
            Xj = X.copy()
            Xj[:, j] = reference[j]
            pj = self.predict_proba(Xj)[np.arange(n), pred]
            out[:, j] = logit - (np.log(np.clip(pj, 1e-12, 1)) - np.log(np.clip(1 - pj, 1e-12, 1)))
        return out, "occlusion (feature set to its training median), log-odds"

    # serialisation: JSON-able params + arrays (safetensors) + optional booster JSON
    def to_parts(self) -> tuple[dict, dict[str, np.ndarray], bytes | None]:
        params, arrays, booster = dict(self.params), dict(self.arrays), self.booster_json
        if self.config.model == "ensemble":  # members' arrays prefixed "m<i>.", their metadata in params
            members = params.pop("fitted_members")
            params["members"] = []
            for i, m in enumerate(members):
                mm, ma, mb = m.to_parts()
                params["members"].append(mm)
                arrays.update({f"m{i}.{k}": v for k, v in ma.items()})
                booster = mb if mb is not None else booster
        meta = {"config": self.config.to_dict(), "n_classes": self.n_classes, "preprocessing": self.pre.to_json(),
                "params": params}
        return meta, {k: np.ascontiguousarray(v) for k, v in arrays.items()}, booster

    @classmethod
    def from_parts(cls, meta: dict, arrays: dict[str, np.ndarray], booster_json: bytes | None) -> "FittedModel":
        params = dict(meta.get("params", {}))
        if meta["config"].get("model") == "ensemble":
            members = []
            for i, mm in enumerate(params.pop("members")):
                tree = mm["config"]["model"] in ("rf", "xgboost")
                members.append(cls.from_parts(mm, {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"m{i}.")},
                                              booster_json if tree else None))
            params["fitted_members"] = members
            arrays = {}
        return cls(Config.from_dict(meta["config"]), int(meta["n_classes"]), Preprocessor.from_json(meta["preprocessing"]),
                   dict(arrays), params, booster_json if meta["config"].get("model") != "ensemble" else None)


# ------------------------------------------------------------------------------------------------
# Fitting


def _class_weight_vector(y: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.bincount(y, minlength=n_classes).astype(float)
    return len(y) / (n_classes * np.maximum(counts, 1))


def ensemble_members(config: Config) -> list[Config]:
    """The member configurations of an ensemble config: each member's defaults, with the ensemble's
    seed, C (logistic regression), n_estimators (forest) and iterations (network)."""
    return [default_config(m, seed=config.seed, class_weights=config.class_weights or None,
                           C=config.C if m == "logreg" else None,
                           n_estimators=config.n_estimators if m == "rf" else None,
                           iterations=config.iterations if m in HIDDEN else None) for m in ENSEMBLE_MEMBERS]


def fit_model(config: Config, X: np.ndarray, y: np.ndarray, n_classes: int) -> FittedModel:
    """Fit ``config`` on raw features X (n, d) and class indices y."""
    if config.model == "ensemble":
        members = [fit_model(c, X, y, n_classes) for c in ensemble_members(config)]
        identity = Preprocessor("none", np.zeros(X.shape[1]), np.ones(X.shape[1]), np.arange(X.shape[1]))
        return FittedModel(config, n_classes, identity, {}, {"fitted_members": members})
    pre = Preprocessor.fit(X, y, config.scaling, config.select_k)
    Z = pre.transform(X)
    kind = config.model
    if kind in HIDDEN:
        if config.plain_study_network:
            from spineai.models.gridtrain import numba_available

            # The compiled per-sample loop is exact and fast; without numba, torch's batched steps
            # are much faster than the numpy fallback except in stochastic mode.
            if numba_available() or not _torch_available():
                return _fit_study_network(config, pre, Z, y, n_classes)
        return _fit_torch_network(config, pre, Z, y, n_classes)
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression

        m = LogisticRegression(C=config.C, max_iter=5000, class_weight="balanced" if config.class_weights else None)
        m.fit(Z, y)
        return FittedModel(config, n_classes, pre, {"coef": m.coef_.astype(np.float64), "intercept": m.intercept_.astype(np.float64)})
    if kind == "svm":
        return _fit_svm(config, pre, Z, y, n_classes)
    if kind in ("xgboost", "rf"):
        return _fit_xgb(config, pre, Z, y, n_classes)
    raise SpineAIError(f"unknown model {kind!r}")


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _targets(y, n_classes):
    return y.reshape(-1, 1).astype(np.float64) if n_classes == 2 else np.eye(n_classes)[y]


def _net_sizes(config: Config, d: int, n_classes: int) -> tuple[int, ...]:
    return (d, *HIDDEN[config.model], 1 if n_classes == 2 else n_classes)


def _arrays_from_flat(flat: np.ndarray, sizes) -> dict[str, np.ndarray]:
    from spineai.models.gridtrain import layer_offsets

    out = {}
    for i, (woff, boff, fi, fo) in enumerate(layer_offsets(sizes)):
        out[f"layer{i}.weight"] = flat[woff:boff].reshape(fo, fi).astype(np.float64)
        out[f"layer{i}.bias"] = flat[boff:boff + fo].astype(np.float64)
    return out


def _fit_study_network(config, pre, Z, y, n_classes) -> FittedModel:
    """Plain gradient descent with the study's update rule (mean gradient of each batch times the
    learning rate), from a Glorot start, in the compiled loop shared with the grid."""
    from spineai.models import gridtrain

    sizes = _net_sizes(config, Z.shape[1], n_classes)
    bs = MODES[config.mode] or len(y)
    checkpoints = sorted({max(1, config.iterations * k // 20) for k in range(1, 21)})
    res = gridtrain.train_runs(Z, _targets(y, n_classes), sizes, [np.arange(len(y))], np.array([0]),
                               gridtrain.glorot_init(sizes, config.seed), np.array([config.learning_rate]),
                               np.array([bs]), np.array(checkpoints), seed=config.seed)
    losses = [float(gridtrain.cross_entropy(gridtrain.forward_flat(res.snapshots[s, :, 0], sizes, Z), _targets(y, n_classes)))
              for s in range(len(checkpoints))]
    return FittedModel(config, n_classes, pre, _arrays_from_flat(res.snapshots[-1, :, 0], sizes),
                       {"n_layers": len(sizes) - 1, "sizes": list(sizes)},
                       history={"epoch": checkpoints, "train_loss": losses})


def _fit_torch_network(config, pre, Z, y, n_classes) -> FittedModel:
    import torch
    from torch import nn

    # Tiny networks: one thread avoids the thread-pool overhead (and leaves the other core alone).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_torch_network_impl(config, pre, Z, y, n_classes, torch, nn)
    finally:
        torch.set_num_threads(threads)


def _fit_torch_network_impl(config, pre, Z, y, n_classes, torch, nn) -> FittedModel:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    sizes = _net_sizes(config, Z.shape[1], n_classes)
    layers: list[nn.Module] = []
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fi, fo))
        if i < len(sizes) - 2:
            if config.batchnorm:
                layers.append(nn.BatchNorm1d(fo))
            layers.append(nn.Tanh())
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
    net = nn.Sequential(*layers).double()
    train_idx, val_idx = np.arange(len(y)), np.array([], dtype=np.int64)
    if config.early_stopping:
        from sklearn.model_selection import StratifiedShuffleSplit

        if np.bincount(y).min() < 2 or len(y) < 10:
            raise SpineAIError("early stopping needs at least 10 samples and 2 per class for its validation split")
        train_idx, val_idx = next(StratifiedShuffleSplit(1, test_size=0.2, random_state=config.seed).split(Z, y))
    Xt = torch.from_numpy(Z)
    w = torch.from_numpy(_class_weight_vector(y[train_idx], n_classes)) if config.class_weights else None
    if n_classes == 2:
        yt = torch.from_numpy(y.astype(np.float64))
        pos_weight = (w[1] / w[0]) if w is not None else None
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        crit = lambda out, idx: loss_fn(out[:, 0], yt[idx])  # noqa: E731
    else:
        yt = torch.from_numpy(y)
        loss_fn = nn.CrossEntropyLoss(weight=w)
        crit = lambda out, idx: loss_fn(out, yt[idx])  # noqa: E731
    opt = (torch.optim.Adam if config.optimizer == "adam" else torch.optim.SGD)(net.parameters(), lr=config.learning_rate)
    bs = MODES[config.mode] or len(train_idx)
    if config.batchnorm and bs == 1:
        bs = 2  # batch normalisation needs two samples per step
    best, best_loss, best_epoch, patience = None, math.inf, 0, max(20, config.iterations // 10)
    hist_e, hist_tr, hist_va = [], [], []
    log_every = max(1, config.iterations // 50)
    with torch.enable_grad():
        for epoch in range(1, config.iterations + 1):
            net.train()
            perm = rng.permutation(train_idx)
            for s in range(0, len(perm), bs):
                idx = torch.from_numpy(perm[s:s + bs])
                if config.batchnorm and len(idx) < 2:
                    continue
                opt.zero_grad()
                loss = crit(net(Xt[idx]), idx)
                loss.backward()
                opt.step()
            if config.early_stopping or epoch % log_every == 0 or epoch == config.iterations:
                net.eval()
                with torch.no_grad():
                    tr = float(crit(net(Xt[torch.from_numpy(train_idx)]), torch.from_numpy(train_idx)))
                    va = float(crit(net(Xt[torch.from_numpy(val_idx)]), torch.from_numpy(val_idx))) if len(val_idx) else math.nan
                if epoch % log_every == 0 or epoch == config.iterations:
                    hist_e.append(epoch), hist_tr.append(tr), hist_va.append(va)
                if config.early_stopping:
                    if va < best_loss - 1e-6:
                        best_loss, best_epoch = va, epoch
                        best = {k: v.clone() for k, v in net.state_dict().items()}
                    elif epoch - best_epoch > patience:
                        break
    if best is not None:
        net.load_state_dict(best)
    net.eval()
    arrays, li = {}, 0
    mods = list(net)
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            W, b = m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy()
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if isinstance(nxt, nn.BatchNorm1d):  # fold inference-time batch norm into the layer
                g = nxt.weight.detach().numpy() / np.sqrt(nxt.running_var.numpy() + nxt.eps)
                W, b = W * g[:, None], (b - nxt.running_mean.numpy()) * g + nxt.bias.detach().numpy()
            arrays[f"layer{li}.weight"], arrays[f"layer{li}.bias"] = W.astype(np.float64), b.astype(np.float64)
            li += 1
    history = {"epoch": hist_e, "train_loss": hist_tr}
    if config.early_stopping:
        history["validation_loss"] = hist_va
    params = {"n_layers": li, "sizes": list(sizes)}
    if config.early_stopping:
        params["best_epoch"] = best_epoch
    return FittedModel(config, n_classes, pre, arrays, params, history=history)


def _fit_svm(config, pre, Z, y, n_classes) -> FittedModel:
    """RBF SVM(s), one-vs-rest for more than two classes, each with Platt scaling fitted on
    cross-validated decision values (so probabilities are not fitted on the SVM's own training fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    tasks = [y == 1] if n_classes == 2 else [y == c for c in range(n_classes)]
    svs, owners, duals, icepts, pa, pb = [], [], [], [], [], []
    gamma = None
    for c, target in enumerate(tasks):
        t = target.astype(int)
        svc = SVC(kernel="rbf", C=config.C, gamma="scale", class_weight="balanced" if config.class_weights else None)
        svc.fit(Z, t)
        gamma = float(svc._gamma)
        # Platt on out-of-fold decision values
        k = int(min(3, np.bincount(t).min()))
        dec = np.zeros(len(t))
        if k >= 2:
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=config.seed).split(Z, t):
                s = SVC(kernel="rbf", C=config.C, gamma=gamma, class_weight=svc.class_weight).fit(Z[tr], t[tr])
                dec[te] = s.decision_function(Z[te])
        else:
            dec = svc.decision_function(Z)
        lr = LogisticRegression(C=1e4, max_iter=2000).fit(dec[:, None], t)
        svs.append(svc.support_vectors_)
        owners.append(np.full(len(svc.support_vectors_), c))
        duals.append(svc.dual_coef_[0])
        icepts.append(float(svc.intercept_[0]))
        pa.append(float(lr.coef_[0, 0]))
        pb.append(float(lr.intercept_[0]))
    n_sv = sum(len(s) for s in svs)
    dual = np.zeros((len(tasks), n_sv))
    off = 0
    for c, dc in enumerate(duals):
        dual[c, off:off + len(dc)] = dc
        off += len(dc)
    arrays = {"support_vectors": np.vstack(svs), "sv_owner": np.concatenate(owners).astype(np.int64), "dual_coef": dual,
              "intercept": np.array(icepts), "platt_a": np.array(pa), "platt_b": np.array(pb)}
    return FittedModel(config, n_classes, pre, arrays, {"gamma": gamma})


def _fit_xgb(config, pre, Z, y, n_classes) -> FittedModel:
    import xgboost as xgb

    w = _class_weight_vector(y, n_classes)[y] if config.class_weights else None
    dtrain = xgb.DMatrix(Z, label=y, weight=w)
    params = {"objective": "binary:logistic" if n_classes == 2 else "multi:softprob", "seed": config.seed,
              "nthread": 1, "verbosity": 0}
    if n_classes > 2:
        params["num_class"] = n_classes
    if config.model == "rf":
        # random forest mode: one round of many parallel, bagged, fully grown-ish trees
        params.update(num_parallel_tree=config.n_estimators, subsample=0.632, colsample_bynode=math.sqrt(Z.shape[1]) / Z.shape[1],
                      learning_rate=1.0, max_depth=max(config.max_depth, 6), min_child_weight=1)
        rounds = 1
    else:
        params.update(max_depth=config.max_depth, eta=0.05, subsample=0.8, colsample_bytree=0.8, min_child_weight=1)
        rounds = config.n_estimators
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    raw = bytes(booster.save_raw("json"))
    return FittedModel(config, n_classes, pre, {}, {"rounds": rounds}, booster_json=raw)


def default_config(model: str, **overrides) -> Config:
    """Defaults per model: networks at the study's best mode and learning rate; others sensible
    small-data settings."""
    base: dict[str, Any] = {"model": model}
    if model in ("logreg", "svm", "rf", "xgboost"):
        base["scaling"] = "standard"
    if model == "ensemble":
        base.update(scaling="none", iterations=3000)  # each member scales for itself; network A's epochs
    base.update({k: v for k, v in overrides.items() if v is not None})
    return Config(**base)


def json_dumps(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)


def with_seed(config: Config, seed: int) -> Config:
    return replace(config, seed=seed)
