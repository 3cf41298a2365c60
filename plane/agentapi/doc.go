// Package agentapi is the network link between the plane and the node
// agents: the gRPC service every host's agent serves (agentpb), a Client
// that implements migrate.Host over it for the plane, the Server that
// exposes a host's local steps (migrate/node) and its sensor's events, and
// Peers, with which one agent fetches an offered checkpoint or container
// image from another.
//
// The link is mutual TLS only (internal/mtls): the transport credentials
// are the caller's to give, and the Server refuses to start without a way
// to tell who calls (WithCaller). Roles: the plane may call every step and
// subscribe to events; another agent may only call Transfer, and only with
// a ticket the plane had the serving agent issue for that very agent.
//
// Errors keep their meaning across the wire: a step's sentinel errors
// (migrate.ErrStaleGeneration, migrate.ErrAddressTaken,
// migrate.ErrIncompleteImage...) travel as gRPC status details and come
// back as the same sentinels, and a host that cannot be reached comes back
// as migrate.ErrUnreachable, never as "dead".
//
// Every unary request carries its absolute wall-clock deadline
// (deadline.go), and the agent refuses one that arrives after it, or
// carries none, before any step runs: a request a healed partition
// delivers late is refused (migrate.ErrRequestExpired: answered, nothing
// done), never applied whenever it lands. Streams carry none.
package agentapi
