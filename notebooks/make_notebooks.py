"""Writes the notebooks from the cell sources below (run: python notebooks/make_notebooks.py).

The notebooks hold no logic of their own: every cell calls the library. Keeping their
source here makes review and diffs easy; tests/test_notebooks.py executes the .ipynb files.
"""

import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

QUICKSTART = [
    new_markdown_cell(
        "# crossgap_jax quickstart\n\n"
        "Load a CLIP model, invert a few images with OTI (image -> pseudo word tokens) and\n"
        "compare image->image with OTI->image retrieval.\n\n"
        "This notebook runs offline on the **demo model shipped with the package**: a small\n"
        "CLIP trained here on scikit-learn's bundled digits (`python -m crossgap_jax.train."
        "digits`). With real weights use `cg.load_clip(\"ViT-B/32\", checkpoint=...)` instead."),
    new_code_cell(
        "import numpy as np\n"
        "import crossgap_jax as cg\n"
        "from crossgap_jax.demo import load_demo_clip\n"
        "from crossgap_jax.train.data import digits_data\n"
        "from crossgap_jax.train.evaluate import encode_images\n\n"
        "clip = load_demo_clip()\n"
        "print(clip.config.name, clip.config.embed_dim, clip.info['source'])"),
    new_markdown_cell("Held-out digits (the model never saw them): queries and a gallery."),
    new_code_cell(
        "train, test = digits_data(clip.config.vision.image_size, test_fraction=0.3, "
        "split_seed=0)\n"
        "queries = test.subset(np.arange(0, len(test), 6), 'queries')\n"
        "fq = encode_images(clip, queries)   # (Nq, embed_dim), not normalised\n"
        "fg = encode_images(clip, train)     # (Ng, embed_dim)\n"
        "fq.shape, fg.shape"),
    new_markdown_cell(
        "OTI: 150 AdamW steps (lr 2e-2, wd 0.01) per image, all images and all steps in one\n"
        "compiled XLA program. `record_steps` snapshots the features along the way."),
    new_code_cell(
        "res = cg.oti(clip, fq, steps=150, num_tokens=1, record_steps=(10, 50))\n"
        "print(res.pseudo_tokens.shape, res.features.shape, res.losses.shape)\n"
        "print('mean loss at steps 1, 10, 150:', res.losses[[0, 9, 149]].mean(axis=1))"),
    new_code_cell(
        "rel = (queries.labels, train.labels)\n"
        "base = cg.retrieval.evaluate(fq, fg, rel)\n"
        "inv = cg.retrieval.evaluate(res.features, fg, rel)\n"
        "at10 = cg.retrieval.evaluate(res.features_at(10), fg, rel)\n"
        "print(f\"image->image mAP {base['mAP']:.2f}   OTI->image mAP {inv['mAP']:.2f}   \"\n"
        "      f\"(OTI after 10 steps: {at10['mAP']:.2f})\")"),
    new_markdown_cell(
        "The functional core is a plain jitted function for your own `vmap`/`shard_map`:\n"
        "`cg.inversion.oti_fn(params, targets, init, base_embeddings, hparams, config=..., "
        "placeholder_index=..., eot_index=..., steps=...)`."),
    new_code_cell(
        "tpl = cg.inversion.prepare_template('a photo of {}', 1, clip.tokenizer)\n"
        "print(tpl.text, tpl.ids[:8], 'placeholder at', tpl.placeholder_index, "
        "'EOT at', tpl.eot_index)"),
]

MISALIGNMENT = [
    new_markdown_cell(
        "# Intra-modal misalignment: distributions, optimisation dynamics, the gap\n\n"
        "On the shipped demo model (a small CLIP trained here on sklearn digits). The\n"
        "same calls work on any `cg.load_clip(...)` model."),
    new_code_cell(
        "import numpy as np\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "import crossgap_jax as cg\n"
        "from crossgap_jax.demo import load_demo_clip\n"
        "from crossgap_jax.train.data import digits_data\n"
        "from crossgap_jax.train.evaluate import encode_images, encode_texts\n\n"
        "clip = load_demo_clip()\n"
        "train, test = digits_data(clip.config.vision.image_size, 0.3, 0)\n"
        "queries = test.subset(np.arange(0, len(test), 4), 'queries')\n"
        "fq, fg = encode_images(clip, queries), encode_images(clip, train)\n"
        "prompts = encode_texts(clip, [f'a photo of {c}' for c in train.classnames])\n"
        "paired_text = prompts[queries.labels]   # each image's class prompt"),
    new_markdown_cell("## Similarity distributions (image-image, text-image, inverted-image)"),
    new_code_cell(
        "res = cg.oti(clip, fq, steps=150, record_steps=(1, 2, 5, 10, 20, 50, 100))\n"
        "d = cg.retrieval.similarity_distributions(fq, paired_text, res.features)\n"
        "edges = d['image-image']['bin_edges']\n"
        "centers = 0.5 * (edges[1:] + edges[:-1])\n"
        "for name, part in [('image-image (unpaired)', d['image-image']['unpaired']),\n"
        "                   ('text-image (paired)', d['text-image']['paired']),\n"
        "                   ('OTI-image (paired)', d['inverted-image']['paired'])]:\n"
        "    h = part['histogram'] / part['histogram'].sum()\n"
        "    plt.plot(centers, h, label=f\"{name}: mean {part['mean']:.2f}\")\n"
        "plt.xlabel('cosine similarity'); plt.legend(); plt.show()"),
    new_markdown_cell("## Retrieval quality along the optimisation (the paper's Figure 2)"),
    new_code_cell(
        "rel = (queries.labels, train.labels)\n"
        "base = cg.retrieval.evaluate(fq, fg, rel)['mAP']\n"
        "steps = list(res.record_steps) + [150]\n"
        "maps = [cg.retrieval.evaluate(res.features_at(s), fg, rel)['mAP'] for s in steps]\n"
        "plt.semilogx(steps, maps, 'o-', label='OTI->image')\n"
        "plt.axhline(base, ls='--', color='k', label='image->image')\n"
        "plt.xlabel('OTI step'); plt.ylabel('mAP (%)'); plt.legend(); plt.show()\n"
        "list(zip(steps, np.round(maps, 2)))"),
    new_markdown_cell("## Modality-gap statistics"),
    new_code_cell(
        "{'image-text gap': cg.retrieval.modality_gap(fq, paired_text),\n"
        " 'image-OTI gap': cg.retrieval.modality_gap(fq, res.features),\n"
        " 'text-OTI gap': cg.retrieval.modality_gap(paired_text, res.features)}"),
]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = os.path.join(HERE, name)
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(write("quickstart.ipynb", QUICKSTART))
    print(write("misalignment.ipynb", MISALIGNMENT))
