"""Train the byte-level BPE of the LM configs on the embedded corpus and write its ``tokenizer.json``.

  python -m launch.lm_tokenizer --output=/tmp/pydoc_bpe512.json --vocab_size=512

The tiny LM configs train the same tokenizer in memory when ``tokenizer=`` is empty in
``config.data.path``; with a file, pass ``--config.data.path=corpus=pydoc,seq_length=64,vocab_size=512,
tokenizer=/tmp/pydoc_bpe512.json``. A Hugging Face ``tokenizer.json`` (e.g. Pythia's) works the same way.
"""

import pathlib

from absl import flags

from jaxlab import cli
from jaxlab.lm.data import corpus_documents
from jaxlab.lm.tokenizer import train_bpe

_OUTPUT = flags.DEFINE_string("output", None, "tokenizer.json to write (must not exist)", required=True)
_VOCAB = flags.DEFINE_integer("vocab_size", 512, "number of ids (> 257)")
_CORPUS = flags.DEFINE_string("corpus", "pydoc", "embedded corpus: pydoc or zen")


def main(argv):
    del argv
    out = pathlib.Path(_OUTPUT.value)
    if out.exists():
        raise SystemExit(f"{out} already exists; choose another --output (jaxlab never overwrites user files)")
    tokenizer = train_bpe(corpus_documents(_CORPUS.value, "train"), _VOCAB.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out))
    print(f"wrote {out}: {tokenizer.get_vocab_size()} ids trained on the {_CORPUS.value} training documents")


if __name__ == "__main__":
    cli.run(main)
