"""One module per data source: where its files are, what layout they have, how they are read.

Every reader returns an :class:`~crossgap_jax.data.types.ImageSplit` or
:class:`~crossgap_jax.data.types.TextSplit`; :mod:`crossgap_jax.data.registry` names them.
Image sources: :mod:`.coop` (the nine CoOp datasets), :mod:`.fgvc_aircraft`,
:mod:`.imagenet`, :mod:`.cub`, :mod:`.sop`, :mod:`.revisitop`, :mod:`.imagefolder`
(generic). Text sources: :mod:`.captions` (COCO, Flickr30k, NoCaps), :mod:`.imdb`,
:mod:`.newsgroups`, :mod:`.beir` (NanoBEIR and any BEIR folder), :mod:`.cisi`, :mod:`.jsonl`
(generic). Both: :mod:`.tfds` (a prepared tensorflow-datasets data dir) and :mod:`.embedded`
(the demo subset shipped with the package).
"""
