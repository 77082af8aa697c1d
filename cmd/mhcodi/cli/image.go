package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/mhcodi/mhcodi/configs"
	"github.com/mhcodi/mhcodi/guestraid/image"
)

// PackageImageBinDir is where the mhcodi package installs uroot-init,
// guestraid and mhcodi-workload for image build.
const PackageImageBinDir = "/usr/lib/mhcodi"

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Build the guest image (kernel + initramfs with guestraid and mdadm)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newImageBuildCmd(g))
	return cmd
}

func newImageBuildCmd(g *globals) *cobra.Command {
	var o image.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the guest image into --out (default: hypervisor.image_dir of the cluster file)",
		Long: `Builds what guests without a boot section of their own boot: Debian's kernel
and a u-root initramfs whose init is u-root's, with guestraid as uinit (it
assembles the mirrored disks, then watches them), Debian's mdadm with its
libraries, the md, virtio, fw_cfg and ACPI button modules, and the test
workload. The image is rebuilt only when one of its inputs changed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.OutDir == "" {
				cfg, err := configs.Load(g.config)
				if err != nil {
					return &exitError{ExitInvalid, fmt.Errorf("--out not given and the cluster file cannot say: %w", err)}
				}
				o.OutDir = cfg.Hypervisor.ImageDir
			}
			if o.BinDir == "" {
				exe, err := os.Executable()
				if err != nil {
					return &exitError{ExitUsage, fmt.Errorf("--bin-dir: %w", err)}
				}
				o.BinDir = filepath.Dir(exe)
				// The package keeps the image's programs out of PATH.
				if _, err := os.Stat(filepath.Join(o.BinDir, "guestraid")); err != nil {
					if _, err := os.Stat(filepath.Join(PackageImageBinDir, "guestraid")); err == nil {
						o.BinDir = PackageImageBinDir
					}
				}
			}
			if o.KernelDir == "" {
				// A source checkout: bin/ next to .cache/kernel.
				o.KernelDir = filepath.Join(filepath.Dir(o.BinDir), ".cache", "kernel")
			}
			o.Logf = func(format string, args ...any) {
				if !asJSON {
					fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...)
				}
			}
			res, err := image.Build(cmd.Context(), o)
			if err != nil {
				return &exitError{ExitInvalid, err}
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			state := "up to date"
			if res.Rebuilt {
				state = "built"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "guest image %s: %s\n  kernel     %s (%s)\n  initramfs  %s\n  key        %s\n",
				res.Dir, state, res.Kernel, res.Manifest.KernelVersion, res.Initramfs, res.Manifest.Key)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.OutDir, "out", "", "output directory")
	cmd.Flags().StringVar(&o.KernelDir, "kernel-dir", "", "unpacked Debian kernel (default <bin-dir>/../.cache/kernel, where scripts/deps.sh puts it)")
	cmd.Flags().StringVar(&o.BinDir, "bin-dir", "", "directory with uroot-init, guestraid and mhcodi-workload (default: this program's directory, else "+PackageImageBinDir+" where the package puts them)")
	cmd.Flags().StringVar(&o.Mdadm, "mdadm", "/sbin/mdadm", "mdadm binary to copy with its libraries")
	cmd.Flags().BoolVar(&o.Force, "force", false, "rebuild even when nothing changed")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
