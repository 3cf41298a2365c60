package agentpb

// The generated code is committed, so a build needs neither protoc nor its
// plugins; `make generate` rebuilds it with the plugin versions go.mod pins
// as tools.
//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative agent.proto"
