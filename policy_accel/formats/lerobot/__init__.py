"""LeRobot policy folders (pretrained_model/): reader, normaliser, RGB encoder and feature names.

Importing the package registers LeRobot's observation encoder with :mod:`policy_accel.model.builders`, so
a config naming it (a loaded folder, or its converted safetensors copy) builds without model/ knowing formats/.
"""

from policy_accel.formats.lerobot.features import ENCODER_TYPE
from policy_accel.formats.lerobot.rgb_encoder import build_lerobot_encoder
from policy_accel.model.builders import register_obs_encoder

register_obs_encoder(ENCODER_TYPE, build_lerobot_encoder)
