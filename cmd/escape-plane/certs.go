package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/escape-mtd/escape/internal/mtls"
)

// certsCmd makes and inspects the mutual-TLS identities of the plane, the
// node agents and operators; the work is mtls's, this only reads flags.
func certsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make and inspect the certificates of the plane, node agents and operators",
		Long: `certs keeps a small CA for ESCAPE's mutual TLS: init makes the CA, issue
signs an identity (spiffe://escape.mtd/<role>/<name>) for an agent, the plane
or an operator, show prints what a certificate says. Keep the CA directory off
the hosts; copy each host only its out-dir. Certificates from cert-manager work
as well (see internal/mtls/doc.go).`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(certsInitCmd(), certsIssueCmd(), certsShowCmd())
	return cmd
}

func certsInitCmd() *cobra.Command {
	r := mtls.InitCARequest{}
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Make a CA: DIR/ca.crt and DIR/ca.key",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			certPath, keyPath, err := mtls.InitCA(r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s (keep the key off the hosts)\n", certPath, keyPath)
			return nil
		},
	}
	cmd.Flags().StringVar(&r.Dir, "dir", "", "directory for ca.crt and ca.key (made 0700 if missing)")
	cmd.Flags().StringVar(&r.Name, "name", "escape-ca", "the CA's name")
	cmd.Flags().DurationVar(&r.Validity, "validity", 87600*time.Hour, "how long the CA is valid")
	cmd.Flags().BoolVar(&r.Force, "force", false, "replace an existing ca.key")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func certsIssueCmd() *cobra.Command {
	r := mtls.IssueRequest{}
	cmd := &cobra.Command{
		Use:   "issue --ca-dir DIR --out-dir OUT --role agent|plane|operator --name NAME",
		Short: "Issue an identity: OUT/NAME.crt, OUT/NAME.key and a copy of OUT/ca.crt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := mtls.IssueFiles(r)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, %s and %s\n", f.Cert, f.Key, f.CA)
			return nil
		},
	}
	cmd.Flags().StringVar(&r.CADir, "ca-dir", "", "directory holding ca.crt and ca.key (certs init --dir)")
	cmd.Flags().StringVar(&r.OutDir, "out-dir", "", "directory for the certificate, key and ca.crt")
	cmd.Flags().StringVar(&r.Role, "role", "", "agent, plane or operator")
	cmd.Flags().StringVar(&r.Name, "name", "", "the agent's host name, the plane's name, or the operator's")
	cmd.Flags().StringSliceVar(&r.DNS, "dns", nil, "extra DNS names (an agent always has its name)")
	cmd.Flags().StringSliceVar(&r.IPs, "ip", nil, "IP addresses the holder listens on")
	cmd.Flags().DurationVar(&r.Validity, "validity", 8760*time.Hour, "how long the certificate is valid")
	cmd.Flags().BoolVar(&r.Force, "force", false, "replace an existing NAME.key, or an OUT/ca.crt of another CA")
	for _, f := range []string{"ca-dir", "out-dir", "role", "name"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}

func certsShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show FILE",
		Short: "Print a certificate's identity, names and validity",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return mtls.ShowCertificate(cmd.OutOrStdout(), args[0], time.Now())
		},
	}
}
