// Package config reads ESCAPE's one configuration file. It is a YAML
// document whose top-level keys are the daemons' sections, `sensor` and
// `plane`; each daemon decodes its own section strictly into its own type
// (unknown keys are errors that name the key and its line) and leaves the
// other section to its owner, so one file configures a host.
package config
