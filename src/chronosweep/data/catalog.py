"""The bundled datasets by name: layout and file under the data root (origins and digests: data.files)."""

# Bundled dataset name -> (layout, file under the data root).
BUNDLED = {
    "dyknow": ("dyknow", "dyknow/grc_generated.json"),
    "mquake": ("mquake", "mquake/MQuAKE-T.sample3.json"),
    "mquake-hard": ("mquake", "mquake/MQuAKE-hard.json"),
    "counterfact": ("counterfact", "counterfact/counterfact-edit-1k.json"),
    "zsre": ("zsre", "zsre/zsre_mend_train-1k.json"),
}
KNOWN_1000 = "known_1000/known_1000.json"
