package plane

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/escape-mtd/escape/migrate"
)

// offlineHost is a host whose agent never answers: every call fails with
// migrate.ErrUnreachable. Unit tests of the API, policy and store use it
// to prove that logic which must not reach a host does not, and that the
// plane says "unreachable" rather than guessing when it must.
type offlineHost struct{ name string }

func (h offlineHost) err(call string) error {
	return fmt.Errorf("%s on %s: %w", call, h.name, migrate.ErrUnreachable)
}

func (h offlineHost) Name() string { return h.name }
func (h offlineHost) Close() error { return nil }
func (h offlineHost) Hello(context.Context) (migrate.HostInfo, error) {
	return migrate.HostInfo{}, h.err("hello")
}
func (h offlineHost) Status(context.Context, string) (migrate.ContainerStatus, error) {
	return migrate.ContainerStatus{}, h.err("status")
}
func (h offlineHost) Start(context.Context, migrate.Spec, migrate.StartOptions) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("start")
}
func (h offlineHost) Restart(context.Context, migrate.Spec) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("restart")
}
func (h offlineHost) Kill(context.Context, string) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("kill")
}
func (h offlineHost) Remove(context.Context, string) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("remove")
}
func (h offlineHost) Checkpoint(context.Context, string, migrate.ImageName, migrate.CheckpointOptions) (migrate.CheckpointResult, error) {
	return migrate.CheckpointResult{}, h.err("checkpoint")
}
func (h offlineHost) Restore(context.Context, migrate.Spec, migrate.ImageName, migrate.RestoreOptions) (migrate.RestoreResult, error) {
	return migrate.RestoreResult{}, h.err("restore")
}
func (h offlineHost) Stage(context.Context, migrate.Spec, migrate.ImageName, migrate.StageOptions) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("stage")
}
func (h offlineHost) StartStaged(context.Context, migrate.Spec, migrate.ImageName, migrate.StartStagedOptions) (migrate.RestoreResult, error) {
	return migrate.RestoreResult{}, h.err("start staged")
}
func (h offlineHost) VerifyImage(context.Context, migrate.ImageName) (int64, error) {
	return 0, h.err("verify image")
}
func (h offlineHost) DropImage(context.Context, migrate.ImageName) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("drop image")
}
func (h offlineHost) EnsureImage(context.Context, string, *migrate.Peer) (migrate.ImageResult, error) {
	return migrate.ImageResult{}, h.err("ensure image")
}
func (h offlineHost) Offer(context.Context, migrate.Offer) (migrate.Ticket, error) {
	return "", h.err("offer")
}
func (h offlineHost) Fetch(context.Context, migrate.ImageName, migrate.Peer) (migrate.TransferResult, error) {
	return migrate.TransferResult{}, h.err("fetch")
}
func (h offlineHost) PrepareNetwork(context.Context, migrate.Spec, bool) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("prepare network")
}
func (h offlineHost) RemoveNetwork(context.Context, string) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("remove network")
}
func (h offlineHost) ReleaseAddress(context.Context, string, netip.Prefix) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("release address")
}
func (h offlineHost) ClaimAddress(context.Context, string, netip.Prefix, migrate.ClaimOptions) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("claim address")
}
func (h offlineHost) Announce(context.Context, string, netip.Addr, migrate.AnnounceOptions) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("announce")
}
func (h offlineHost) Probe(context.Context, netip.Addr, string, time.Duration) (migrate.ProbeResult, error) {
	return migrate.ProbeResult{}, h.err("probe")
}
func (h offlineHost) StartSentry(context.Context, netip.Addr, string, time.Duration) (migrate.SentryID, error) {
	return "", h.err("start sentry")
}
func (h offlineHost) StopSentry(context.Context, migrate.SentryID) (migrate.ProbeResult, error) {
	return migrate.ProbeResult{}, h.err("stop sentry")
}
func (h offlineHost) SetGuards(context.Context, string, migrate.Guards, bool) (migrate.StepResult, error) {
	return migrate.StepResult{}, h.err("set guards")
}
func (h offlineHost) NetworkLocks(context.Context, string, bool) ([]string, error) {
	return nil, h.err("network locks")
}
func (h offlineHost) Lease(context.Context, string, migrate.Lease) (migrate.LeaseState, error) {
	return migrate.LeaseState{}, h.err("lease")
}

var _ migrate.Host = offlineHost{}
