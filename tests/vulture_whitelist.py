"""What vulture reports as unused but is used by code vulture cannot see (``tests/test_dead_code.py``).

Each entry is a name set or overridden for a framework that reads it by name. Names the bundle
configs reach (``_target_: shared...``, ``$shared...``) are collected from the configs by the test.
"""

# ignite's handler API: called by the engine when an event handler raises (checkpoints.final_weights_saver)
exception_raised  # noqa: B018, F821
# MONAI's GanTrainer attributes, read by MONAI's handlers (engines/vae_gan.py)
g_network  # noqa: B018, F821
d_network  # noqa: B018, F821
# zipfile.ZipInfo fields, read by zipfile when it writes the member (export/bundle_export.py)
compress_type  # noqa: B018, F821
external_attr  # noqa: B018, F821
# nnU-Net trainer attributes and its optimiser hook, read by nnUNetTrainer (segmentation/nnunet_training.py)
num_iterations_per_epoch  # noqa: B018, F821
num_val_iterations_per_epoch  # noqa: B018, F821
configure_optimizers  # noqa: B018, F821
# Neighbour fields, written to memorisation.csv through dataclasses.asdict (evaluation/memorisation.py)
label_case  # noqa: B018, F821
feature_case  # noqa: B018, F821
# pytest reads a test module's marks from its pytestmark variable (the slow bundle-training modules)
pytestmark  # noqa: B018, F821
