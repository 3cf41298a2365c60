package sensor_test

import (
	"os"
	"testing"

	"github.com/escape-mtd/escape/sensor/internal/cgtest"
)

func TestMain(m *testing.M) {
	cgtest.MaybeChild()
	os.Exit(m.Run())
}
