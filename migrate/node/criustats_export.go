package node

import "github.com/escape-mtd/escape/migrate"

// ReadCRIUStats is CRIU's own account of a dump (stats-dump in dumpDir)
// and a restore (stats-restore in restoreDir), as the node reports it for
// its containers: for tools that run CRIU directly (planebench's bare
// limit) to report the same figures.
func ReadCRIUStats(dumpDir, restoreDir string) (migrate.CRIUStats, error) {
	return readCRIUStats(dumpDir, restoreDir)
}
