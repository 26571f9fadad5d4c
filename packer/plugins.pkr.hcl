# The Packer and plugin versions mirrorcap.pkr.hcl is written for (`packer init
# packer/` installs the plugin). Kept apart from the template so that an older
# Packer, which predates `required_plugins`, can still check the template's syntax.
packer {
  required_version = ">= 1.10.0"
  required_plugins {
    amazon = {
      # imds_support, temporary_security_group_source_public_ip, session_manager
      version = ">= 1.3.0, < 2.0.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
