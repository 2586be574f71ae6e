"""The bundled datasets by name: layout and file under the data root (origins and digests: data.files)."""

# Bundled dataset name -> (layout, file under the data root).
BUNDLED = {
    "dyknow": ("dyknow", "dyknow/grc_generated.json"),
    "mquake": ("mquake", "mquake/MQuAKE-T.sample3.json"),
    "mquake-hard": ("mquake", "mquake/MQuAKE-hard.json"),
    "mquake-remastered-t": ("mquake-remastered", "mquake-remastered/mquake-T.txt"),
    "knowedit-recent": ("knowedit", "knowedit/recent_train.json"),
    "counterfact": ("counterfact", "counterfact/counterfact-edit-1k.json"),
    "zsre": ("zsre", "zsre/zsre_mend_train-1k.json"),
}
KNOWN_1000 = "known_1000/known_1000.json"

# Said wherever the data or results on it are shown (report summary, docs), as the licences ask.
CREDITS = {
    "mquake-remastered-t": "MQuAKE-Remastered (Zhong et al., 2024), derived from MQuAKE (Zhong et al., 2023); "
                           "CC BY 4.0. The 150-case T sample from leo-liuzy/mend spotcheck/mquake-T.txt",
    "knowedit-recent": "KnowEdit WikiData_recent (Zhang et al., 2024), from RippleEdits (Cohen et al., 2024); MIT",
    "dyknow": "DyKnow (Mousavi et al., 2024); MIT",
    "mquake": "MQuAKE-T (Zhong et al., 2023); MIT",
    "mquake-hard": "MQuAKE-hard (DeepEdit, Wang et al., 2024), derived from MQuAKE (Zhong et al., 2023); MIT",
    "counterfact": "CounterFact (Meng et al., 2022), EasyEdit's 1k split; MIT",
    "zsre": "zsRE (Levy et al., 2017), MEND/EasyEdit split; MIT",
}
