{
  description = "oranc: OCI Registry As Nix Cache";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        oranc = pkgs.rustPlatform.buildRustPackage {
          pname = "oranc";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "oranc" ];
          # The end-to-end tests start a registry and build store paths; the sandbox allows
          # neither, so only the unit tests run here.
          cargoTestFlags = [ "-p" "oranc-core" "-p" "oranc" "--lib" ];
          meta = {
            description = "OCI Registry As Nix Cache";
            license = with pkgs.lib.licenses; [ mit asl20 ];
            mainProgram = "oranc";
          };
        };
        default = self.packages.${pkgs.system}.oranc;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.oranc ];
          packages = with pkgs; [ cargo rustc clippy rustfmt cargo-nextest skopeo distribution sqlite ];
        };
      });
    };
}
