"""Free-text instructions -> restoration task: a small encoder trained here (``tokenizers``, no download).

Instruct-IPT maps a human prompt to the task whose weight biases run (arXiv 2407.00676, v2
abstract: "we enable Instruct-IPT to receive human prompts"); how it encodes the text was not
readable. **Our choice**, documented in ``docs/ipt.md``:

- a WordPiece vocabulary (``tokenizers``, lower-cased, accents stripped, split on whitespace and
  punctuation) trained on the training instructions, so unseen word forms fall back on known
  pieces (``"deraining"`` -> ``de ##rain ##ing``);
- a bag of those tokens (binary presence, plus a bias feature; pieces shorter than 3 characters,
  e.g. ``##e`` or ``it``, are dropped: they carry no meaning and only add noise) into a multinomial logistic
  regression over the tasks **plus an out-of-scope class** (requests no task here fulfils:
  "make it black and white", "crop the left side"), trained by full-batch gradient descent with
  L2 in numpy, deterministically, in well under a second on first use;
- the training set is generated from per-task templates (verbs x degradation nouns x image nouns x
  politeness frames); the **held-out paraphrases** (``HELD_OUT``) are hand-written with phrasings and
  words the templates do not use, and ``heldout_accuracy()`` measures them.

``parse_instruction(text)`` returns the task distribution; ``resolve_instruction(text)`` the task
name or a clear error: ``UnclearInstruction`` when the text names no task we know (no known token,
or out-of-scope most likely) or when it is ambiguous: two tasks within ``margin`` of each other, or
parts joined by "and" / "then" / "," that ask for different tasks ("remove the rain and the noise":
the model restores one task per call, so it asks which).

Alternatives not taken: a pretrained text encoder (CLIP/BERT: a download, which this project
avoids), keyword rules (brittle for paraphrases), a trained small transformer (more code for the
same held-out accuracy at this vocabulary size).
"""

import dataclasses
import functools
import itertools
import re

import numpy as np

from jaxlab.data.degradations import TASKS

OUT_OF_SCOPE = "out_of_scope"

# Per task: verbs (or verb phrases), the degradation's nouns and adjectives used in "make it <adj>".
_TASK_WORDS = {
    "denoise": dict(verbs=("remove", "reduce", "get rid of", "clean up", "suppress", "eliminate", "take out", "filter out"),
                    nouns=("noise", "the noise", "grain", "the grain", "noisy pixels", "sensor noise", "speckles"),
                    adjectives=("less noisy", "noise free", "clean of noise"), names=("denoise", "denoising")),
    "deblur": dict(verbs=("remove", "reduce", "fix", "get rid of", "correct", "undo"),
                   nouns=("blur", "the blur", "motion blur", "the blurriness", "camera shake", "defocus blur"),
                   adjectives=("sharp", "sharper", "in focus", "less blurry", "crisp"), names=("deblur", "deblurring", "sharpen")),
    "derain": dict(verbs=("remove", "erase", "get rid of", "take away", "clear", "eliminate", "wipe out"),
                   nouns=("rain", "the rain", "rain streaks", "the raindrops", "rain lines", "the rainfall"),
                   adjectives=("rain free", "without rain", "dry looking"), names=("derain", "deraining")),
    "dehaze": dict(verbs=("remove", "clear", "reduce", "get rid of", "lift", "cut through"),
                   nouns=("haze", "the haze", "fog", "the fog", "mist", "smog", "the murk"),
                   adjectives=("haze free", "less foggy", "clearer", "less hazy"), names=("dehaze", "dehazing", "defog")),
    "desnow": dict(verbs=("remove", "erase", "get rid of", "clear", "take out", "wipe away"),
                   nouns=("snow", "the snow", "snowflakes", "the falling snow", "snow particles", "the flakes"),
                   adjectives=("snow free", "without snow"), names=("desnow", "desnowing")),
}
_IMAGES = ("", " from the image", " from this photo", " in the picture", " from my photo", " in this shot")
_FRAMES = ("{}", "please {}", "can you {}", "{} please", "i want you to {}", "could you {}", "help me {}")
_OUT_OF_SCOPE = (
    "make it black and white", "crop the left side", "rotate the picture", "add a cat", "increase the saturation",
    "make the sky purple", "resize it", "turn this into a painting", "change the background", "add more contrast",
    "write a poem", "what is in this image", "make it brighter", "flip the image", "draw a dog", "colorize it",
    "add a watermark", "make the person smile", "convert to jpeg", "zoom in on the face", "add text to the image",
    "make it look vintage", "remove the person", "remove the background", "hello", "thank you", "enhance the colors",
    "change the style", "make a collage", "add a frame",
)

# Hand-written paraphrases with wording the templates above never use (the held-out test).
HELD_OUT = {
    "denoise": ("my photo is really grainy, can you fix that", "this picture has lots of noise in it",
                "the image looks speckled, clean it", "denoise", "smooth out the noisy dots", "low light noise everywhere",
                "make this photo less grainy", "please do some noise reduction"),
    "deblur": ("the photo is blurry", "my hands shook when i took this, fix it", "unblur this picture",
               "it is out of focus", "bring the picture into focus", "the picture is smeared by motion",
               "deblurring please", "make the text readable, it is blurred"),
    "derain": ("it was raining when i took this", "there are streaks of rain all over", "remove the rainy streaks",
               "derain this", "rainy day photo, clean it up", "get the rain out", "the raindrops ruin it",
               "i shot this in a downpour"),
    "dehaze": ("the image is hazy", "too much fog in this landscape", "the view is misty, make it clear",
               "dehaze", "see through the smog", "the scene is washed out by haze", "foggy morning photo, fix",
               "defog the picture"),
    "desnow": ("snowflakes are covering the scene", "it was snowing, remove it", "desnow this image",
               "the snowfall hides the street", "get the snow out of the photo", "too many flakes in the way",
               "clean up the snowy speckles from the blizzard", "remove snow"),
    OUT_OF_SCOPE: ("make it sepia", "put a hat on him", "translate this text", "rotate by 90 degrees",
                   "add some clouds", "make it a cartoon"),
}


_CONJUNCTIONS = re.compile(r"\b(?:and|then|plus|also|as well as)\b|[,;&+]", re.IGNORECASE)


class UnclearInstruction(ValueError):
    """The instruction names no task the model restores, or several: ask the user which task."""


def _task_sentences(task: str) -> list[str]:
    words = _TASK_WORDS[task]
    core = [f"{v} {n}{img}" for v, n, img in itertools.product(words["verbs"], words["nouns"], _IMAGES)]
    core += [f"make it {a}" for a in words["adjectives"]] + [f"make the image {a}" for a in words["adjectives"]]
    core += [f"{n}{img}" for n, img in itertools.product(words["names"], _IMAGES)]
    core += [f"there is {n}{img}" for n, img in itertools.product(words["nouns"], _IMAGES)]
    return core


def training_set() -> tuple[list[str], list[str]]:
    """``(sentences, labels)``: template expansions per task (framed politely or not) + out-of-scope requests."""
    rng = np.random.default_rng(0)
    sentences, labels = [], []
    for task in TASKS:
        for core in _task_sentences(task):
            sentences.append(_FRAMES[int(rng.integers(len(_FRAMES)))].format(core))
            labels.append(task)
    for request in _OUT_OF_SCOPE:
        for frame in _FRAMES:
            sentences.append(frame.format(request))
            labels.append(OUT_OF_SCOPE)
    return sentences, labels


def train_tokenizer(sentences: list[str], vocab_size: int = 400):
    """A WordPiece tokenizer (lower-cased, whitespace+punctuation pre-tokenised) trained on ``sentences``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"], min_frequency=1)
    tokenizer.train_from_iterator(sentences, trainer)
    return tokenizer


@dataclasses.dataclass(frozen=True)
class InstructionEncoder:
    """Bag of WordPiece tokens -> logistic regression over ``labels`` (tasks + out-of-scope)."""

    tokenizer: object
    weights: np.ndarray  # [vocab + 1, classes]
    labels: tuple[str, ...]

    def token_ids(self, text: str) -> list[int]:
        """The ids of ``text``'s tokens that are features (known, at least 3 characters without ``##``)."""
        encoding = self.tokenizer.encode(text)
        return [i for i, tok in zip(encoding.ids, encoding.tokens) if tok != "[UNK]" and len(tok.lstrip("#")) >= 3]

    def features(self, texts: list[str]):
        """``[len(texts), vocab + 1]`` binary bag of tokens + bias, sparse (CSR: single-threaded, fast)."""
        from scipy import sparse

        rows, cols = [], []
        for i, text in enumerate(texts):
            ids = sorted(set(self.token_ids(text))) + [self.tokenizer.get_vocab_size()]  # + bias
            rows += [i] * len(ids)
            cols += ids
        shape = (len(texts), self.tokenizer.get_vocab_size() + 1)
        return sparse.csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=shape)

    def known_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), len(labels)]`` class probabilities."""
        logits = self.features(texts) @ self.weights
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)


def fit_encoder(sentences: list[str], labels: list[str], *, steps: int = 1000, learning_rate: float = 20.0,
                l2: float = 1e-4, vocab_size: int = 400) -> InstructionEncoder:
    """Trains the tokenizer and the logistic regression (full-batch gradient descent, deterministic)."""
    classes = tuple(TASKS) + (OUT_OF_SCOPE,)
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not tasks {list(TASKS)} or {OUT_OF_SCOPE!r}")
    encoder = InstructionEncoder(train_tokenizer(sentences, vocab_size), np.zeros((0, 0)), classes)
    x = encoder.features(sentences)
    y = np.eye(len(classes))[[classes.index(lab) for lab in labels]]
    # Balance the classes (the templates give the tasks unequal counts).
    weight = (1.0 / y.sum(0))[np.argmax(y, 1)]
    weight = weight / weight.sum()  # the loss is the class-balanced mean cross-entropy
    w = np.zeros((x.shape[1], len(classes)), np.float64)
    xt = x.T.tocsr()
    for _ in range(steps):
        logits = x @ w
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        w -= learning_rate * (xt @ ((p - y) * weight[:, None]) + l2 * w)
    return dataclasses.replace(encoder, weights=w)


@functools.cache
def default_encoder() -> InstructionEncoder:
    """The encoder trained on ``training_set()`` (cached per process)."""
    return fit_encoder(*training_set())


def parse_instruction(text: str, encoder: InstructionEncoder | None = None) -> dict[str, float]:
    """``{task or "out_of_scope": probability}`` for one instruction."""
    if not isinstance(text, str) or not text.strip():
        raise UnclearInstruction("the instruction is empty; say what to remove, e.g. 'remove the rain'")
    encoder = encoder or default_encoder()
    return dict(zip(encoder.labels, encoder.probabilities([text])[0].tolist()))


def resolve_instruction(text: str, tasks=TASKS, *, encoder: InstructionEncoder | None = None,
                        min_probability: float = 0.5, margin: float = 0.2) -> str:
    """The one task of ``tasks`` the instruction asks for, or ``UnclearInstruction`` saying why not.

    Exact task names pass through. Otherwise the instruction must contain known tokens, its most
    likely class must be a task in ``tasks`` with probability >= ``min_probability`` and lead the
    runner-up task by ``margin``.
    """
    tasks = tuple(tasks)
    if isinstance(text, str) and text.strip().lower() in tasks:
        return text.strip().lower()
    encoder = encoder or default_encoder()
    probs = parse_instruction(text, encoder)
    if encoder.known_tokens(text) == 0:
        raise UnclearInstruction(f"no word of {text!r} is one the instruction encoder knows; which task? one of {list(tasks)}")
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{k} {v:.2f}" for k, v in ranked[:3])
    best, p_best = ranked[0]
    if best == OUT_OF_SCOPE:
        raise UnclearInstruction(f"{text!r} does not ask for a restoration this model does ({shown}); which task? "
                                 f"one of {list(tasks)}")
    if best not in tasks:
        raise UnclearInstruction(f"{text!r} asks for {best}, which this model does not restore; it restores {list(tasks)}")
    runner_up = max((v for k, v in probs.items() if k != best and k != OUT_OF_SCOPE), default=0.0)
    if p_best < min_probability or p_best - runner_up < margin:
        raise UnclearInstruction(f"{text!r} is ambiguous ({shown}); which task? one of {list(tasks)}")
    parts = [p for p in _CONJUNCTIONS.split(text) if p and encoder.known_tokens(p)]
    if len(parts) > 1:
        asked = {}
        for part in parts:
            part_probs = parse_instruction(part, encoder)
            label = max(part_probs, key=part_probs.get)
            if label != OUT_OF_SCOPE and part_probs[label] >= min_probability:
                asked.setdefault(label, part.strip())
        if len(asked) > 1:
            raise UnclearInstruction(f"{text!r} asks for several tasks ({', '.join(f'{k}: {v!r}' for k, v in asked.items())}); "
                                     f"the model restores one per call: which task first?")
    return best


def heldout_accuracy(encoder: InstructionEncoder | None = None) -> dict[str, float]:
    """Top-1 accuracy on ``HELD_OUT`` per class and overall (argmax, no abstention)."""
    encoder = encoder or default_encoder()
    per_class, hits = {}, []
    for label, texts in HELD_OUT.items():
        pred = np.asarray(encoder.labels)[np.argmax(encoder.probabilities(list(texts)), 1)]
        correct = (pred == label).tolist()
        per_class[label] = float(np.mean(correct))
        hits += correct
    return {"overall": float(np.mean(hits)), **per_class}
