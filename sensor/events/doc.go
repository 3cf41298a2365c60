// Package events defines the sensor's JSON event schema (one object per line,
// for a SIEM) and its sinks: a stream (stdout), a file rotated by size, and an
// HTTP webhook with retry and back-off. docs/sensor.md documents the schema.
package events
