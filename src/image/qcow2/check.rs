//! Consistency check of a qcow2 image (qemu-img check), and the role of every host cluster.
