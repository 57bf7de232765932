//! tonno-ml: slice encoders, training, inference and CAM methods (burn). Empty until the training work lands.
