"""A MONAI Label app that serves this bundle: its one model is the bundle's ``configs/inference.yaml``.

    monailabel start_server --app monailabel_app --studies /path/to/images --conf bundle .

(from the bundle's folder; ``--conf bundle`` is the bundle's folder). MONAI Label's
``BundleInferTask`` reads ``network_def``, ``preprocessing``, ``inferer``, ``postprocessing`` and
``models/model.pt`` from the bundle; ``POST /infer/segmenter?image=<id>`` returns the label map.
"""

import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.infer.bundle import BundleInferTask


class SegmenterApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.bundle = os.path.abspath(conf.get("bundle", os.path.join(app_dir, "..")))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="nnunet_segmenter",
            description="nnU-Net segmenter exported as a MONAI bundle",
            version="0.1.0",
        )

    def init_infers(self):
        return {"segmenter": BundleInferTask(self.bundle, self.conf)}
