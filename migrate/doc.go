// Package migrate moves a container between hosts through each host's
// containerd: checkpoint on the source, prepare the destination, move the
// address, restore from shared storage, announce, and delete the source copy.
// Every step can be undone so a failure never leaves zero or two live copies.
package migrate
