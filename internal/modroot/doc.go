// Package modroot finds the root of this Go module, the directory holding
// go.mod, from the working directory. Tools and tests that read files
// beside the repository (../shared/datasets, the deploy manifests) use it
// so that they run from any folder inside the repository.
package modroot
