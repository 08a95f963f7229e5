"""Class-agnostic masks (SAM or superpixels) turned into object and boundary maps."""
